//! dgq-model (filled by later issues).
