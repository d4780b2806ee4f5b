//! `BlockingClient`, the runtime-free connection of the CLI's one-shot commands: against a real
//! agent it handshakes and gets the same answers as the async `Client` (protocol-level answers as
//! errors), also with the request sent behind the hello (`ask`); against nothing it is `Unreachable`; against a peer that accepts and never answers it
//! gives up after the handshake timeout with `NoAnswer` (ignored by default: it takes 10 s).
#![cfg(unix)]

use std::path::PathBuf;
use std::time::{Duration, Instant};
use unitsync_core::Graph;
use unitsync_ipc::client::BlockingClient;
use unitsync_ipc::protocol::{Request, Response};
use unitsync_ipc::server::HANDSHAKE_TIMEOUT;
use unitsync_ipc::{Agent, IpcError};

/// An agent serving on a socket in `dir`, on a runtime in a background thread.
fn agent(dir: &tempfile::TempDir) -> PathBuf {
    let path = dir.path().join("agent.sock");
    let (ready, bound) = std::sync::mpsc::channel();
    let socket = path.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let agent = Agent::bind(&socket, Graph::new()).await.unwrap();
            ready.send(()).unwrap();
            agent.serve_until(std::future::pending()).await;
        });
    });
    bound.recv().unwrap();
    path
}

#[test]
fn answers_like_the_async_client() {
    let dir = tempfile::tempdir().unwrap();
    let path = agent(&dir);
    let mut client = BlockingClient::connect(&path).unwrap();
    assert_eq!(client.welcome().pid, std::process::id());
    match client.request(&Request::Ping).unwrap() {
        Response::Pong { agent } => assert_eq!(agent.units, 0),
        other => panic!("expected pong, got {other:?}"),
    }
    let want = Request::Want {
        unit: "claude".into(),
        dependencies: vec!["git".into()],
    };
    assert!(matches!(
        client.request(&want).unwrap(),
        Response::Wanted {
            registered: true,
            ..
        }
    ));
    let refused = Request::Complete {
        unit: "claude".into(),
    };
    assert!(matches!(
        client.request(&refused).unwrap(),
        Response::Refused { .. }
    ));
    // Many requests on one connection, each answered in turn.
    for _ in 0..100 {
        assert!(matches!(
            client.request(&Request::Ready {
                unit: "claude".into()
            }),
            Ok(Response::Ready { ready: false })
        ));
    }
}

#[test]
fn ask_sends_the_request_behind_the_hello_and_gets_its_answer() {
    let dir = tempfile::tempdir().unwrap();
    let path = agent(&dir);
    let want = Request::Want {
        unit: "claude".into(),
        dependencies: vec!["git".into()],
    };
    assert!(matches!(
        BlockingClient::ask(&path, &want).unwrap(),
        Response::Wanted {
            registered: true,
            ..
        }
    ));
    // Each `ask` is a connection of its own; the agent saw the first one's change.
    match BlockingClient::ask(&path, &Request::Ping).unwrap() {
        Response::Pong { agent } => assert_eq!(agent.units, 2),
        other => panic!("expected pong, got {other:?}"),
    }
    let missing = dir.path().join("nobody.sock");
    assert!(matches!(
        BlockingClient::ask(&missing, &Request::Ping),
        Err(IpcError::Unreachable { .. })
    ));
}

#[test]
fn nothing_listening_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nobody.sock");
    match BlockingClient::connect(&missing) {
        Err(error @ IpcError::Unreachable { .. }) => assert!(error.agent_gone()),
        Err(other) => panic!("expected Unreachable, got {other}"),
        Ok(_) => panic!("connected to nothing"),
    }
}

#[test]
#[ignore = "waits for the 10 s handshake timeout"]
fn a_peer_that_never_answers_is_given_up_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("silent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let silent = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        std::thread::sleep(HANDSHAKE_TIMEOUT + Duration::from_secs(2));
        drop(stream);
    });
    let began = Instant::now();
    match BlockingClient::connect(&path) {
        Err(IpcError::NoAnswer { waited, .. }) => assert_eq!(waited, HANDSHAKE_TIMEOUT),
        Err(other) => panic!("expected NoAnswer, got {other}"),
        Ok(_) => panic!("a silent peer was taken for an agent"),
    }
    assert!(began.elapsed() >= HANDSHAKE_TIMEOUT);
    silent.join().unwrap();
}
