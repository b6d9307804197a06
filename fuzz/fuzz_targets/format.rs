//! The packed-format reader (`dgq_core::format`) on arbitrary bytes: typed errors only, and
//! whatever it accepts the writer writes back and the reader reads back unchanged.
#![no_main]

use dgq_core::format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let info = format::inspect_bytes(data);
    let Ok(model) = format::from_bytes(data) else {
        return;
    };
    assert!(info.is_ok(), "inspect refused a file the reader accepts");
    let bytes = format::to_bytes(&model).expect("a model read from a file is writable");
    let again = format::from_bytes(&bytes).expect("a written model reads back");
    assert!(again == model, "the model changed through write and read");
});
