fn main() {
    let engine = waitline::Engine::default();
    let f = waitline_benches::PairFixture::new(&engine, 100);
    let params: Vec<_> = (0..100).map(|i| f.params(i, None)).collect();
    for round in 0..std::env::args().nth(1).map_or(5, |s| s.parse().unwrap()) {
        let t = std::time::Instant::now();
        for n in 0..100_000 {
            let i = n % 100;
            f.pair(i, &params[i].0, &params[i].1);
        }
        eprintln!("round {round}: {:?} per pair", t.elapsed() / 100_000);
    }
}
