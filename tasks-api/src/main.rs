fn main() {
    auth_core::service::app::run_service(
        tasks_api::INFO,
        tasks_api::local_auth(),
        tasks_api::startup::build,
    );
}
