//! Fuzz target: any bytes through the bundle reader (`Bundle::from_bytes`), which must return an error or a
//! bundle whose every model passed `Program::validate` and `check_slots`, never panic, hang or overflow the
//! stack. Random bytes rarely survive the checksum, so an input whose first byte is odd is split into a
//! manifest and a blob section and sealed with a valid header and checksum (`bundle::seal`), which sends it
//! on to the manifest, blob, program and buffer-plan checks. A bundle that loads must write itself back to
//! bytes that load to the same bundle.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tdsl_runtime::Bundle;
use tdsl_runtime::bundle::seal;

fuzz_target!(|data: &[u8]| {
    let sealed;
    let bytes = match data.split_first() {
        Some((&mode, rest)) if mode % 2 == 1 && !rest.is_empty() => {
            // Byte 1 says where the manifest ends (as a fraction of the rest).
            let cut = rest.len() * usize::from(rest[0]) / 255;
            sealed = seal(&rest[1.min(rest.len())..cut.max(1)], &rest[cut.max(1)..]);
            &sealed[..]
        }
        _ => data,
    };
    if let Ok(bundle) = Bundle::from_bytes(bytes) {
        let again = Bundle::from_bytes(&bundle.to_bytes()).expect("a loaded bundle writes itself back");
        assert_eq!(again, bundle);
    }
});
