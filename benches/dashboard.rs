//! The dashboard's project page on a large database (docs/benchmarks.md).
fn main() {
    println!("dashboard bench: not written yet");
}
