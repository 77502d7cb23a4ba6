//! Key choice for the benchmark: uniform, or zipfian as YCSB draws it (Gray et al., "Quickly
//! generating billion-record synthetic databases"), with ranks scrambled over the key space so
//! the hottest keys land on different nodes rather than next to each other on the ring.

use rand::Rng;

/// How keys are drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Distribution {
    /// Every key equally likely.
    Uniform,
    /// Rank `r` (0-based) drawn with probability proportional to `1 / (r + 1)^theta`.
    Zipfian {
        /// Skew, in (0, 1); YCSB uses 0.99.
        theta: f64,
    },
}

impl Distribution {
    /// Its name in reports.
    pub fn name(self) -> String {
        match self {
            Distribution::Uniform => "uniform".into(),
            Distribution::Zipfian { theta } => format!("zipfian({theta})"),
        }
    }
}

/// Most keys a zipfian chooser precomputes its normalising constant over (O(n) at start).
pub const MAX_ZIPFIAN_KEYS: u64 = 100_000_000;

/// Draws key indices in `0..n`.
#[derive(Clone, Debug)]
pub enum KeyChooser {
    /// Uniform over `0..n`.
    Uniform(u64),
    /// Zipfian ranks, scrambled.
    Zipfian(Zipfian),
}

impl KeyChooser {
    /// A chooser over `n` keys (`n >= 1`; zipfian needs `0 < theta < 1`).
    pub fn new(n: u64, distribution: Distribution) -> Result<KeyChooser, String> {
        if n == 0 {
            return Err("at least one key is needed".into());
        }
        match distribution {
            Distribution::Uniform => Ok(KeyChooser::Uniform(n)),
            Distribution::Zipfian { theta } => Zipfian::new(n, theta).map(KeyChooser::Zipfian),
        }
    }

    /// The next key index.
    pub fn next<R: Rng>(&self, rng: &mut R) -> u64 {
        match self {
            KeyChooser::Uniform(n) => rng.gen_range(0..*n),
            KeyChooser::Zipfian(z) => scramble(z.rank(rng), z.n),
        }
    }
}

/// Maps a rank to a key index: a fixed bijection-free hash (as YCSB's scrambled zipfian does),
/// so rank 0 is not key 0 and neighbouring ranks are spread over the ring.
pub fn scramble(rank: u64, n: u64) -> u64 {
    // splitmix64's finaliser.
    let mut z = rank.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) % n
}

/// A zipfian rank generator over `0..n`.
#[derive(Clone, Debug)]
pub struct Zipfian {
    n: u64,
    theta: f64,
    zeta_n: f64,
    alpha: f64,
    eta: f64,
}

fn zeta(n: u64, theta: f64) -> f64 {
    (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

impl Zipfian {
    /// Precomputes the constants for `n` ranks and skew `theta`.
    pub fn new(n: u64, theta: f64) -> Result<Zipfian, String> {
        if !(theta > 0.0 && theta < 1.0) {
            return Err(format!(
                "zipfian theta must be between 0 and 1 (exclusive), not {theta}"
            ));
        }
        if n == 0 || n > MAX_ZIPFIAN_KEYS {
            return Err(format!(
                "a zipfian distribution needs 1 to {MAX_ZIPFIAN_KEYS} keys, not {n}"
            ));
        }
        let zeta_n = zeta(n, theta);
        let zeta_2 = zeta(2.min(n), theta);
        let eta = if n == 1 {
            0.0
        } else {
            (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta_2 / zeta_n)
        };
        Ok(Zipfian {
            n,
            theta,
            zeta_n,
            alpha: 1.0 / (1.0 - theta),
            eta,
        })
    }

    /// The probability of rank `r` (for tests and reports).
    pub fn probability(&self, r: u64) -> f64 {
        1.0 / ((r + 1) as f64).powf(self.theta) / self.zeta_n
    }

    /// Draws a rank: 0 is the most likely.
    pub fn rank<R: Rng>(&self, rng: &mut R) -> u64 {
        let u: f64 = rng.gen();
        let uz = u * self.zeta_n;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.n - 1);
        }
        let r = (self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        r.min(self.n - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn zipfian_ranks_follow_the_power_law() {
        let z = Zipfian::new(10_000, 0.99).unwrap();
        let mut rng = StdRng::seed_from_u64(7);
        let draws = 400_000;
        let mut counts = vec![0u64; 10_000];
        for _ in 0..draws {
            counts[z.rank(&mut rng) as usize] += 1;
        }
        let share = |r: std::ops::Range<usize>| counts[r].iter().sum::<u64>() as f64 / draws as f64;
        let exact = |r: std::ops::Range<usize>| r.map(|i| z.probability(i as u64)).sum::<f64>();
        // Ranks 0 and 1 are drawn with their exact probability (within sampling noise); the
        // tail is the algorithm's continuous approximation, so bands of ranks are compared.
        for band in [0..1, 1..2, 2..10, 10..100, 100..1000, 1000..10_000] {
            let (seen, want) = (share(band.clone()), exact(band.clone()));
            assert!(
                (seen - want).abs() < want * 0.2,
                "ranks {band:?}: seen {seen:.4}, expected {want:.4}"
            );
        }
    }

    #[test]
    fn uniform_draws_spread_evenly() {
        let c = KeyChooser::new(10, Distribution::Uniform).unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[c.next(&mut rng) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&n| (9_000..11_000).contains(&n)),
            "{counts:?}"
        );
    }

    #[test]
    fn scrambled_zipfian_stays_in_range_and_spreads_the_hot_keys() {
        let c = KeyChooser::new(1000, Distribution::Zipfian { theta: 0.99 }).unwrap();
        let mut rng = StdRng::seed_from_u64(3);
        assert!((0..10_000).all(|_| c.next(&mut rng) < 1000));
        let hot: Vec<u64> = (0..5).map(|r| scramble(r, 1000)).collect();
        assert_ne!(hot, vec![0, 1, 2, 3, 4]);
        assert_eq!(
            KeyChooser::new(1, Distribution::Zipfian { theta: 0.5 })
                .unwrap()
                .next(&mut rng),
            0
        );
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(KeyChooser::new(0, Distribution::Uniform).is_err());
        assert!(Zipfian::new(10, 1.0).is_err());
        assert!(Zipfian::new(10, 0.0).is_err());
        assert!(Zipfian::new(10, f64::NAN).is_err());
        assert!(Zipfian::new(MAX_ZIPFIAN_KEYS + 1, 0.9).is_err());
    }
}
