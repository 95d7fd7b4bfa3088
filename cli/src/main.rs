//! The `rskafka` command-line client.
fn main() {
    eprintln!("rskafka: not yet implemented");
    std::process::exit(2);
}
