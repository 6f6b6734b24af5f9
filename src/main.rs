fn main() {
    env_logger::init();
    log::info!("warren {}", env!("CARGO_PKG_VERSION"));
}
