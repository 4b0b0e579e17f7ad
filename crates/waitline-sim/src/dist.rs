//! Random draws for the simulation: a small seeded generator (the same seed gives the same
//! run on every machine) and the distributions a planner describes calls with.

use crate::SimError;

/// xoshiro256**, seeded through SplitMix64: fast, and good enough for queueing simulation.
#[derive(Clone, Debug)]
pub(crate) struct Rng([u64; 4]);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Self([next(), next(), next(), next()])
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in (0, 1]: never 0, so its logarithm is finite.
    pub(crate) fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Exponential with the given mean.
    pub(crate) fn exponential(&mut self, mean: f64) -> f64 {
        -mean * self.unit().ln()
    }

    /// Standard normal (Box-Muller; one of the pair is enough here).
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// How long something lasts, in seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Distribution {
    /// Exponential with this mean (the memoryless case the Erlang formulas assume).
    Exponential {
        /// Mean, seconds.
        mean: f64,
    },
    /// Always the same.
    Fixed {
        /// Seconds.
        secs: f64,
    },
    /// Log-normal with this mean and standard deviation (of the duration itself, not of its
    /// logarithm): handle times of real contact centers look like this.
    LogNormal {
        /// Mean, seconds.
        mean: f64,
        /// Standard deviation, seconds.
        sd: f64,
    },
}

impl Distribution {
    /// Log-normal with this mean and deviation; without a deviation, half the mean (a
    /// handle-time spread typical of contact centers).
    #[must_use]
    pub fn log_normal(mean: f64, sd: Option<f64>) -> Self {
        Self::LogNormal { mean, sd: sd.unwrap_or(mean / 2.0) }
    }

    /// The mean, seconds.
    #[must_use]
    pub fn mean(&self) -> f64 {
        match *self {
            Self::Exponential { mean } | Self::LogNormal { mean, .. } => mean,
            Self::Fixed { secs } => secs,
        }
    }

    /// Refuses means that are not positive and finite and negative deviations, naming `what`.
    pub(crate) fn validate(&self, what: &'static str) -> Result<(), SimError> {
        let positive = |x: f64| x.is_finite() && x > 0.0;
        let ok = match *self {
            Self::Exponential { mean } => positive(mean),
            Self::Fixed { secs } => positive(secs),
            Self::LogNormal { mean, sd } => positive(mean) && sd.is_finite() && sd >= 0.0,
        };
        if ok { Ok(()) } else { Err(SimError::Invalid { what, why: "must have a positive, finite mean" }) }
    }

    pub(crate) fn draw(&self, rng: &mut Rng) -> f64 {
        match *self {
            Self::Exponential { mean } => rng.exponential(mean),
            Self::Fixed { secs } => secs,
            Self::LogNormal { mean, sd } => {
                let sigma2 = (1.0 + (sd / mean).powi(2)).ln();
                (mean.ln() - sigma2 / 2.0 + sigma2.sqrt() * rng.normal()).exp()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_mean_sd(d: Distribution, n: usize) -> (f64, f64) {
        let mut rng = Rng::new(7);
        let xs: Vec<f64> = (0..n).map(|_| d.draw(&mut rng)).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        (mean, var.sqrt())
    }

    #[test]
    fn draws_have_the_asked_moments() {
        let (m, sd) = sample_mean_sd(Distribution::Exponential { mean: 180.0 }, 200_000);
        assert!((m - 180.0).abs() < 2.0 && (sd - 180.0).abs() < 3.0, "{m} {sd}");
        let (m, sd) = sample_mean_sd(Distribution::LogNormal { mean: 300.0, sd: 120.0 }, 200_000);
        assert!((m - 300.0).abs() < 2.0 && (sd - 120.0).abs() < 3.0, "{m} {sd}");
        assert_eq!(sample_mean_sd(Distribution::Fixed { secs: 42.0 }, 10), (42.0, 0.0));
    }

    #[test]
    fn a_log_normal_without_a_deviation_has_half_its_mean() {
        assert_eq!(Distribution::log_normal(180.0, None), Distribution::LogNormal { mean: 180.0, sd: 90.0 });
        assert_eq!(
            Distribution::log_normal(180.0, Some(30.0)),
            Distribution::LogNormal { mean: 180.0, sd: 30.0 }
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_draws() {
        let (mut a, mut b, mut c) = (Rng::new(1), Rng::new(1), Rng::new(2));
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        assert_eq!(xs, (0..8).map(|_| b.next_u64()).collect::<Vec<_>>());
        assert_ne!(xs, (0..8).map(|_| c.next_u64()).collect::<Vec<_>>());
        assert!((0..10_000).all(|_| a.unit() > 0.0 && a.unit() <= 1.0));
    }

    #[test]
    fn invalid_distributions_are_refused() {
        assert!(Distribution::Exponential { mean: 0.0 }.validate("handle_time").is_err());
        assert!(Distribution::Fixed { secs: f64::NAN }.validate("handle_time").is_err());
        assert!(Distribution::LogNormal { mean: 1.0, sd: -1.0 }.validate("handle_time").is_err());
        assert!(Distribution::LogNormal { mean: 1.0, sd: 0.0 }.validate("handle_time").is_ok());
    }
}
