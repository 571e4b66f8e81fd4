//! Benchmark baseline: a bare hyper 1 server with the same hyper, hyper-util and tokio
//! as smsgate, answering every request with the 200 `<Response></Response>` smsgate
//! sends for an admitted webhook. No signature check, no store, no fsync: what is left
//! is the HTTP stack, so `bench/run` can compare smsgate against it.
//!
//! `cargo run --release --example bare_hyper -- [PORT]` (default 0: any free port).
//! Prints `listening on 127.0.0.1:PORT` once bound. Same runtime flavour as the daemon
//! (multi_thread, one worker per CPU it may run on: pin it with `taskset -c 0`).

#[path = "common/http.rs"]
mod http;

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let _ = http::read_body(req).await;
    Ok(http::twiml(StatusCode::OK))
}

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .map(|p| p.parse().expect("PORT must be a number"))
        .unwrap_or(0);
    http::serve(port, answer)
}
