#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    auth_core::service::app::run_service(
        todo_api::INFO,
        todo_api::local_auth(),
        todo_api::startup::build,
    );
}
