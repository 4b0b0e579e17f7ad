//! The closed formulas a planner checks a simulation against: Erlang C (M/M/n, callers wait
//! as long as it takes) and Erlang A (M/M/n+M, callers give up after an exponential
//! patience).

/// What a queueing formula predicts for one set of inputs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prediction {
    /// Which formula: `"Erlang C"` or `"Erlang A"`.
    pub model: &'static str,
    /// Share of callers who wait at all (who find every agent busy).
    pub probability_of_waiting: f64,
    /// Share of offered callers answered within the service-level threshold (Erlang C only).
    pub service_level: Option<f64>,
    /// Mean time in queue over every offered caller, answered or not (seconds).
    pub mean_wait_secs: f64,
    /// Mean wait of the answered callers (seconds).
    pub mean_answered_wait_secs: Option<f64>,
    /// Share of offered callers who give up (Erlang A; 0 for Erlang C).
    pub abandonment: f64,
    /// Share of agent time spent on calls.
    pub occupancy: f64,
}

/// Erlang C for `agents` agents, `arrival_rate` callers a second and a mean handle time of
/// `handle_secs`, with a service-level threshold of `threshold_secs`. `None` when the load
/// is at or above the number of agents: the queue grows without bound and nothing is steady.
#[must_use]
pub fn erlang_c(agents: u32, arrival_rate: f64, handle_secs: f64, threshold_secs: f64) -> Option<Prediction> {
    let n = f64::from(agents);
    let load = arrival_rate * handle_secs;
    if agents == 0 || load >= n || !load.is_finite() || load <= 0.0 {
        return None;
    }
    // Erlang B by its stable recurrence, then C from B.
    let mut blocking = 1.0;
    for k in 1..=agents {
        blocking = load * blocking / (f64::from(k) + load * blocking);
    }
    let waiting = n * blocking / (n - load * (1.0 - blocking));
    let drain_rate = (n - load) / handle_secs;
    let mean_wait = waiting / drain_rate;
    Some(Prediction {
        model: "Erlang C",
        probability_of_waiting: waiting,
        service_level: Some(1.0 - waiting * (-drain_rate * threshold_secs).exp()),
        mean_wait_secs: mean_wait,
        mean_answered_wait_secs: Some(mean_wait),
        abandonment: 0.0,
        occupancy: load / n,
    })
}

/// Erlang A: as Erlang C, and each waiting caller gives up after an exponential patience of
/// mean `patience_secs`. Computed from the birth-death chain's stationary distribution,
/// summed until the tail is negligible (the chain is stable at any load).
#[must_use]
pub fn erlang_a(agents: u32, arrival_rate: f64, handle_secs: f64, patience_secs: f64) -> Option<Prediction> {
    let valid = |x: f64| x.is_finite() && x > 0.0;
    if agents == 0 || !valid(arrival_rate) || !valid(handle_secs) || !valid(patience_secs) {
        return None;
    }
    let (mu, theta) = (1.0 / handle_secs, 1.0 / patience_secs);
    let n = f64::from(agents);
    // Unnormalised probabilities, relative to state 0, kept in log space against overflow.
    let mut log_p = 0.0_f64;
    let mut logs = Vec::with_capacity(agents as usize + 64);
    logs.push(0.0);
    for j in 1..=agents {
        log_p += (arrival_rate / (f64::from(j) * mu)).ln();
        logs.push(log_p);
    }
    let mut k = 1.0;
    loop {
        log_p += (arrival_rate / (n * mu + k * theta)).ln();
        logs.push(log_p);
        // The ratio falls below 1 once k*theta > arrival rate - n*mu; stop when terms vanish.
        if (k * theta > arrival_rate && log_p < logs[agents as usize] - 40.0) || logs.len() > 10_000_000 {
            break;
        }
        k += 1.0;
    }
    let top = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = logs.iter().map(|l| (l - top).exp()).collect();
    let total: f64 = weights.iter().sum();
    let busy_n = agents as usize;
    let waiting: f64 = weights[busy_n..].iter().sum::<f64>() / total;
    let queue_len: f64 = weights[busy_n..].iter().enumerate().map(|(q, w)| q as f64 * w).sum::<f64>() / total;
    let busy: f64 = weights.iter().enumerate().map(|(j, w)| (j.min(busy_n)) as f64 * w).sum::<f64>() / total;
    let abandonment = theta * queue_len / arrival_rate;
    Some(Prediction {
        model: "Erlang A",
        probability_of_waiting: waiting,
        service_level: None,
        mean_wait_secs: queue_len / arrival_rate,
        mean_answered_wait_secs: None,
        abandonment,
        occupancy: busy / n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erlang_c_textbook_case() {
        // 10 agents and a load of 8 erlangs: P(wait) = 0.4092 in the standard tables, and
        // with a 180 s handle time the mean wait is 0.4092 * 180 / (10 - 8) = 36.8 s.
        let p = erlang_c(10, 8.0 / 180.0, 180.0, 20.0).expect("stable");
        assert!((p.probability_of_waiting - 0.4092).abs() < 5e-4, "{p:?}");
        assert!((p.mean_wait_secs - 36.83).abs() < 0.05, "{p:?}");
        assert!((p.occupancy - 0.8).abs() < 1e-12);
        let sl = 1.0 - 0.4092 * (-2.0 / 180.0 * 20.0_f64).exp();
        assert!((p.service_level.expect("C has one") - sl).abs() < 1e-3, "{p:?}");
    }

    #[test]
    fn erlang_c_single_agent_is_mm1() {
        // M/M/1: P(wait) = rho, mean wait = rho / (mu - lambda).
        let p = erlang_c(1, 0.5, 1.0, 0.0).expect("stable");
        assert!((p.probability_of_waiting - 0.5).abs() < 1e-12);
        assert!((p.mean_wait_secs - 1.0).abs() < 1e-12);
        assert!((p.service_level.expect("C") - 0.5).abs() < 1e-12, "P(W <= 0) = 1 - rho");
    }

    #[test]
    fn erlang_c_refuses_an_unstable_load() {
        assert!(erlang_c(5, 5.0, 1.0, 20.0).is_none());
        assert!(erlang_c(0, 1.0, 1.0, 20.0).is_none());
    }

    #[test]
    fn erlang_a_tends_to_erlang_c_with_endless_patience() {
        let c = erlang_c(10, 8.0 / 180.0, 180.0, 20.0).expect("stable");
        let a = erlang_a(10, 8.0 / 180.0, 180.0, 1e9).expect("valid");
        assert!((a.probability_of_waiting - c.probability_of_waiting).abs() < 1e-4, "{a:?} {c:?}");
        assert!((a.mean_wait_secs - c.mean_wait_secs).abs() < 0.05, "{a:?} {c:?}");
        assert!(a.abandonment < 1e-6);
    }

    #[test]
    fn erlang_a_single_agent_with_patience_equal_to_service() {
        // lambda = mu = theta = 1 and one agent: p_j = p_0 / j!, so p_0 = 1 / e, the mean
        // queue is sum (j - 1) p_j = 1 / e, and the abandonment theta * E[Q] / lambda = 1 / e.
        let a = erlang_a(1, 1.0, 1.0, 1.0).expect("valid");
        let e = std::f64::consts::E;
        assert!((a.abandonment - 1.0 / e).abs() < 1e-9, "{a:?}");
        assert!((a.probability_of_waiting - (e - 1.0) / e).abs() < 1e-9, "{a:?}");
        assert!((a.occupancy - (e - 1.0) / e).abs() < 1e-9, "{a:?}");
        assert!((a.mean_wait_secs - 1.0 / e).abs() < 1e-9, "{a:?}");
    }

    #[test]
    fn erlang_a_is_stable_above_capacity() {
        // Overload: twice the agents' capacity; half the callers must give up at least.
        let a = erlang_a(5, 10.0, 1.0, 2.0).expect("valid");
        assert!(a.abandonment > 0.5 && a.abandonment < 1.0, "{a:?}");
        assert!(a.occupancy > 0.95, "{a:?}");
    }
}
