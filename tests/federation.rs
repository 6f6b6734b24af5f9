//! Federated exchanges between warren and a real RabbitMQ: scenarios in
//! `tests/python_links/` (pika), each run against an embedded warren (with
//! its management API, which the scenarios read) and a private RabbitMQ
//! node with the `rabbitmq_federation` plugin, started here.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::rabbitmq::RabbitMq;
use common::{root, run, TestBroker};
use std::process::Command;

/// Warren with its management API on an ephemeral port.
fn warren() -> TestBroker {
    common::start_with(|c| {
        c.management_listen = Some("127.0.0.1:0".parse().unwrap());
    })
}

/// Run the pytest file `scenario` of `tests/python_links/` against
/// `warren` and `rabbit` (their ports, the node and `rabbitmqctl` in the
/// environment).
fn pytest(scenario: &str, warren: &TestBroker, rabbit: &RabbitMq) {
    let python = common::venv_python("pyvenv-links", "tests/python_links/requirements.txt");
    let mgmt = warren.mgmt_addr.expect("management listener");
    run(Command::new(&python)
        .current_dir(root().join("tests/python_links"))
        .args([
            "-m",
            "pytest",
            "-q",
            "-s",
            "-p",
            "no:cacheprovider",
            scenario,
        ])
        .env("WARREN_PORT", warren.addr.port().to_string())
        .env("WARREN_MGMT_PORT", mgmt.port().to_string())
        .env("RABBIT_PORT", rabbit.addr.port().to_string())
        .env("RABBITMQCTL", "/usr/lib/rabbitmq/bin/rabbitmqctl")
        .env("RABBIT_NODE", &rabbit.node));
}

/// Warren as the upstream of exchanges federated by RabbitMQ
/// (`test_federation_upstream.py`): what the link declares on warren (an
/// `x-federation-upstream` exchange among it), what it forwards, and what
/// warren's exchange keeps back (max-hops, loops back to the downstream).
#[test]
fn rabbitmq_federates_an_exchange_from_warren() {
    let warren = warren();
    let rabbit = RabbitMq::start_with("fed-upstream", &["rabbitmq_federation"], "");
    pytest("test_federation_upstream.py", &warren, &rabbit);
}

/// Warren as the downstream (`test_federation_downstream.py`): an
/// exchange and a queue on warren federated from RabbitMQ (binding keys
/// followed, `x-received-from`, max-hops, consuming on demand), and a
/// ring of the two brokers, each federating the other's exchange, where a
/// message stops at max-hops.
#[test]
fn warren_federates_an_exchange_and_a_queue_from_rabbitmq() {
    let warren = warren();
    let rabbit = RabbitMq::start_with("fed-downstream", &["rabbitmq_federation"], "");
    pytest("test_federation_downstream.py", &warren, &rabbit);
}
