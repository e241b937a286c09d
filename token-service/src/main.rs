fn main() {
    token_service::cli::main();
}
