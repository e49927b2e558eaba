//! Arbitrary bytes as a state file: the loader never panics, and whatever it accepts
//! survives a save/load round trip unchanged and still passes its own checks.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use vswitch::state;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("/fuzz/state.json");
    let Ok(snap) = state::parse(data, path) else { return };
    let bytes = serde_json::to_vec(&snap).expect("a parsed snapshot serializes");
    let again = state::parse(&bytes, path).expect("a saved snapshot loads");
    assert_eq!(again, snap);
});
