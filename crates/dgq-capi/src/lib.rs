//! dgq-capi (filled by later issues).
