//! dgq-cuda (filled by later issues).
