fn main() {
    auth_core::service::app::run_service(
        token_service::INFO,
        token_service::local_auth(),
        token_service::startup::build,
    );
}
