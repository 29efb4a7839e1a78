//! Test doubles shared by the native benchmark (`benches/translate.rs`) and the callgrind driver
//! (`benches/hot_path.rs`), so both measure the same request path.

use tracebridge::translate::RandomSource;
use tracebridge::trust::Peer;

/// A cheap deterministic random source (xorshift64), so new traces cost what the filter's do
/// minus the host call.
pub struct XorShift(pub u64);

impl RandomSource for XorShift {
    fn fill(&mut self, buf: &mut [u8]) -> bool {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            for (byte, random) in chunk.iter_mut().zip(self.0.to_le_bytes()) {
                *byte = random;
            }
        }
        true
    }
}

/// A caller on the loopback address without a principal (trusted by the widest configuration).
pub struct Loopback;

impl Peer for Loopback {
    fn address(&mut self) -> Option<std::net::IpAddr> {
        Some([127, 0, 0, 1].into())
    }

    fn principal(&mut self) -> Option<String> {
        None
    }
}
