//! A loopback HTTP server's two halves, for teacher tests: reading one whole request and
//! writing a response.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One whole request: the headers, then as many body bytes as Content-Length says (TCP may
/// deliver them in several reads).
pub fn read_request(stream: &mut std::net::TcpStream) -> String {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&data).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())
                        .flatten()
                })
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                return text;
            }
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&data).into_owned(),
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    }
}

/// A whole HTTP/1.1 response with a JSON body; `extra_headers` end with `\r\n` each.
pub fn response(status: &str, extra_headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra_headers}Connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A server answering request `n` (counted from 0) with `answer(n)`: `Some(bytes)` to send,
/// `None` to hang past the client's timeout. Returns its base URL and the request counter.
pub fn serve(answer: fn(usize) -> Option<String>, delay: Duration) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}/v1", listener.local_addr().expect("addr"));
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let n = c.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                read_request(&mut stream);
                std::thread::sleep(delay);
                match answer(n) {
                    Some(bytes) => {
                        let _ = stream.write_all(bytes.as_bytes());
                    }
                    None => std::thread::sleep(Duration::from_secs(3)),
                }
            });
        }
    });
    (base, count)
}
