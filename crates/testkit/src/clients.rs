//! gRPC channels to a plaintext server of the mall on loopback, for the
//! tests, the fault run and the benchmark: written once.

use std::net::SocketAddr;

use tonic::transport::{Channel, Endpoint};

/// The endpoint of the plaintext gRPC server at `addr`.
pub fn endpoint(addr: SocketAddr) -> Endpoint {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap_or_else(|e| panic!("a socket address is a valid URI: {e}"))
}

/// A channel to the server at `addr` that connects on first use.
pub fn lazy(addr: SocketAddr) -> Channel {
    endpoint(addr).connect_lazy()
}

/// A channel to the server at `addr`, connected now; fails loudly if it
/// cannot be.
pub async fn connect(addr: SocketAddr) -> Channel {
    endpoint(addr)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot reach the gRPC server at {addr}: {e}"))
}

/// A channel to the server on port `port` of 127.0.0.1, connecting on
/// first use.
pub fn lazy_on(port: u16) -> Channel {
    lazy(SocketAddr::from(([127, 0, 0, 1], port)))
}
