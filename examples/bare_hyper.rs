//! Benchmark baseline: a bare hyper 1 server with the same hyper, hyper-util and tokio
//! as smsgate, answering every request with the 200 `<Response></Response>` smsgate
//! sends for an admitted webhook. No signature check, no store, no fsync: what is left
//! is the HTTP stack, so `bench/run` can compare smsgate against it.
//!
//! `cargo run --release --example bare_hyper -- [PORT]` (default 0: any free port).
//! Prints `listening on 127.0.0.1:PORT` once bound. Same runtime flavour as the daemon
//! (multi_thread, one worker per CPU it may run on: pin it with `taskset -c 0`).

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{header, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

const TWIML_EMPTY: &[u8] = b"<Response></Response>";

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // Read the body like smsgate does (it has to, to check the signature).
    let _ = req.into_body().collect().await;
    let mut r = Response::new(Full::new(Bytes::from_static(TWIML_EMPTY)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/xml"),
    );
    Ok(r)
}

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .map(|p| p.parse().expect("PORT must be a number"))
        .unwrap_or(0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
        println!("listening on {}", listener.local_addr()?);
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(x) => x,
                Err(_) => continue,
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service_fn(answer))
                    .await;
            });
        }
    })
}
