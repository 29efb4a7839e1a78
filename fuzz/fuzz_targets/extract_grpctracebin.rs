//! `grpctracebin` extract: arbitrary values of its headers; what it reads must write back and read the
//! same (tracebridge_fuzz::fuzz_extract).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracebridge::formats::Format;

fuzz_target!(|data: &[u8]| tracebridge_fuzz::fuzz_extract(Format::GrpcTraceBin, data));
