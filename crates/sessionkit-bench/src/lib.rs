//! Helpers shared by the sessionkit benchmarks: an allocation-counting global allocator, a small
//! deterministic random source, statistics, the sessionkit side of the HTTP scenarios, a
//! bounded HTTP/1.1 load generator for loopback servers, a closed-loop store-operation driver
//! and a round-trip-counting TCP proxy.
//!
//! The comparison subjects that need tower-sessions or dashmap live in `benches/common`, so that
//! those crates stay dev-only dependencies of this crate.

#![warn(missing_docs)]

pub mod alloc;
pub mod apps;
pub mod loadgen;
pub mod ops;
pub mod procs;
pub mod rtt;
pub mod stats;

/// The JSON texts of the three small values every benchmark session carries, on every side.
pub const VALUES: [(&str, &str); 3] = [("user_id", "12345"), ("theme", "\"dark\""), ("count", "7")];

/// Idle deadline of the bench sessions (sessionkit's default idle timeout).
pub const IDLE_MS: sessionkit::Millis = 30 * 60 * 1000;

/// A sessionkit record with the [`VALUES`], live for [`IDLE_MS`] from `now`.
pub fn sk_record(now: sessionkit::Millis) -> sessionkit::Record {
    let mut r = sessionkit::Record::new(now, now + IDLE_MS, now + 12 * 3600 * 1000);
    for (k, v) in VALUES {
        r.data.set(k, v).expect("small values");
    }
    r
}

/// A splitmix64 generator: fast, seedable, and good enough to pick keys and make random 256-bit
/// keys (the real keys are SHA-256 outputs, i.e. uniform bytes).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (n > 0; the tiny modulo bias is irrelevant here).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// 32 random bytes.
    pub fn bytes32(&mut self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for chunk in out.chunks_exact_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        out
    }
}
