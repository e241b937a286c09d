/// mimalloc: cheaper small allocations on the request path than glibc's malloc, and freed
/// memory goes back to the system (built without transparent huge pages, so idle RSS stays
/// small).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    auth_core::service::app::run_service(
        todo_api::INFO,
        todo_api::local_auth(),
        todo_api::startup::build,
    );
}
