//! A small seeded generator for property tests: the seed is printed and an environment
//! variable replays it, so a failing round can be run again exactly.

/// xorshift64*: small, seedable, good enough to pick test values.
pub struct Rng {
    state: u64,
    /// The seed it started from, for messages naming the round to replay.
    pub seed: u64,
}

impl Rng {
    /// Seeded from `variable` when it holds a number, else `default`; prints how to replay.
    pub fn seeded(variable: &str, default: u64) -> Rng {
        let seed = std::env::var(variable)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default);
        eprintln!("seed: {seed} (replay with {variable}={seed})");
        Rng { state: seed, seed }
    }

    pub fn next(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}
