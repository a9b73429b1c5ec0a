//! A loopback stand-in for the Hugging Face Hub: a `std::net::TcpListener`
//! on `127.0.0.1:0` that answers `HEAD`/`GET /{owner}/{repo}/resolve/{rev}/{file}`
//! with canned files (`ETag`, `X-Repo-Commit`, `Content-Length`), one
//! response per connection (`Connection: close`). Shared by fm-data's and
//! fm-cli's tests.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// The commit every served file belongs to.
pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// How to serve one file.
#[derive(Clone, Debug)]
pub struct Served {
    pub body: Vec<u8>,
    /// Send only this many bytes of the body (with the full `Content-Length`), then close.
    pub truncate_at: Option<usize>,
}

#[derive(Default)]
struct State {
    files: HashMap<String, Served>,
    requests: Vec<String>,
}

/// The server; it stops (and its port closes) when dropped or [`HubServer::stop`]ped.
pub struct HubServer {
    pub endpoint: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    port: u16,
    handle: Option<JoinHandle<()>>,
    served: Arc<AtomicUsize>,
}

fn etag_of(body: &[u8]) -> String {
    // FNV-1a: a stable content hash for the ETag (the blob's name in the cache).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in body {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}{}", body.len())
}

impl HubServer {
    pub fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let (st, sp, sv) = (state.clone(), stop.clone(), served.clone());
        let handle = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = conn {
                    let _ = answer(stream, &st);
                    sv.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        Ok(Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            state,
            stop,
            port,
            handle: Some(handle),
            served,
        })
    }

    /// Serves `body` as `{repo}/resolve/{rev}/{file}` (`repo` is `owner/name`).
    pub fn put(&self, repo: &str, rev: &str, file: &str, body: Vec<u8>, truncate_at: Option<usize>) {
        let path = format!("/{repo}/resolve/{rev}/{file}");
        if let Ok(mut s) = self.state.lock() {
            s.files.insert(path, Served { body, truncate_at });
        }
    }

    /// The requests seen so far, as `METHOD PATH`.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().map(|s| s.requests.clone()).unwrap_or_default()
    }

    /// Stops the server and closes its port.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn answer(stream: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let raw_path = parts.next().unwrap_or_default().to_string();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
    }
    let path = raw_path.replace("%2F", "/");
    let served = {
        let mut s = state.lock().map_err(|_| std::io::Error::other("poisoned"))?;
        s.requests.push(format!("{method} {path}"));
        s.files.get(&path).cloned()
    };
    let mut w = stream;
    match served {
        None => {
            let body = b"{\"error\":\"Entry not found\"}";
            write!(
                w,
                "HTTP/1.1 404 Not Found\r\nX-Repo-Commit: {COMMIT}\r\nX-Error-Code: EntryNotFound\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            if method != "HEAD" {
                w.write_all(body)?;
            }
        }
        Some(f) => {
            write!(
                w,
                "HTTP/1.1 200 OK\r\nETag: \"{}\"\r\nX-Repo-Commit: {COMMIT}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                etag_of(&f.body),
                f.body.len()
            )?;
            if method == "GET" {
                let n = f.truncate_at.unwrap_or(f.body.len()).min(f.body.len());
                w.write_all(&f.body[..n])?;
            }
        }
    }
    w.flush()?;
    let _ = w.shutdown(std::net::Shutdown::Both);
    Ok(())
}
