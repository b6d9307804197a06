//! The `dgq` command line (subcommands arrive with the model pipeline).
fn main() {
    println!("dgq {}", env!("CARGO_PKG_VERSION"));
}
