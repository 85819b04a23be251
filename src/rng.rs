//! A small seeded random generator (xorshift64*, Vigna 2016, "An experimental exploration of
//! Marsaglia's xorshift generators, scrambled"), so that adapter initialisation, data
//! shuffling and test fixtures are reproducible from a seed on every platform.

/// xorshift64* with the state seeded through a multiplicative hash (never zero).
#[derive(Debug, Clone)]
pub struct XorShift64Star(u64);

impl XorShift64Star {
    /// A generator for `seed`; equal seeds give equal streams.
    pub fn new(seed: u64) -> XorShift64Star {
        XorShift64Star(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, 1)`, with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `n` values uniform in `[-bound, bound]`.
    pub fn uniform(&mut self, n: usize, bound: f32) -> Vec<f32> {
        (0..n)
            .map(|_| ((2.0 * self.next_f64() - 1.0) as f32) * bound)
            .collect()
    }
}
