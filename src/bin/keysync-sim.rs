//! `keysync-sim`: the local simulator of keysync's three remote parties.
//! A thin shell over the `keysync-sim` crate, which shares no code with keysync.
fn main() -> std::process::ExitCode {
    keysync_sim::cli_main()
}
