//! `data::fetch` against a local HTTP server: verified download, atomic placement, and a
//! corrupt download that leaves nothing behind.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;

use md5::{Digest, Md5};
use proco::data::fetch::{fetch, Archive};

fn toy_archive() -> Vec<u8> {
    let mut tar_bytes = Vec::new();
    {
        let gz = flate2::write::GzEncoder::new(&mut tar_bytes, flate2::Compression::fast());
        let mut builder = tar::Builder::new(gz);
        let payload = b"hello long tail";
        let mut header = tar::Header::new_gnu();
        header.set_size(payload.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, "toy-data/a.bin", &payload[..]).unwrap();
        builder.into_inner().unwrap().finish().unwrap();
    }
    tar_bytes
}

/// Serves `body` to `connections` requests, then stops.
fn serve(body: Vec<u8>, connections: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(connections) {
            let mut s = stream.unwrap();
            let mut req = Vec::new();
            let mut byte = [0u8; 1];
            while !req.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
                req.push(byte[0]);
            }
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    format!("http://{addr}/toy.tar.gz")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("proco-fetch-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn verified_download_is_unpacked_into_place() {
    let body = toy_archive();
    let md5 = format!("{:x}", Md5::digest(&body));
    let archive = Archive { url: serve(body.clone(), 1), md5, extracts_to: "toy-data".into() };
    let dir = scratch("ok");
    let mut seen = Vec::new();
    let out = fetch(&archive, &dir, &mut |done, total| seen.push((done, total))).unwrap();
    assert_eq!(out, dir.join("toy-data"));
    assert_eq!(std::fs::read(out.join("a.bin")).unwrap(), b"hello long tail");
    assert_eq!(seen.last().copied(), Some((body.len() as u64, Some(body.len() as u64))));
    let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers, ["toy-data"], "temporary files must be gone");
    // Present already: returned without any network access (this URL has no server).
    let offline = Archive { url: "http://127.0.0.1:9/none".into(), ..archive };
    assert_eq!(fetch(&offline, &dir, &mut |_, _| {}).unwrap(), dir.join("toy-data"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn corrupt_download_leaves_nothing() {
    let archive = Archive { url: serve(toy_archive(), 1), md5: "0".repeat(32), extracts_to: "toy-data".into() };
    let dir = scratch("bad");
    let err = fetch(&archive, &dir, &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("MD5"), "{err}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "no partial file or directory may remain");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unreachable_server_is_a_clear_error() {
    let archive = Archive { url: "http://127.0.0.1:9/none.tar.gz".into(), md5: "0".repeat(32), extracts_to: "x".into() };
    let dir = scratch("down");
    let err = fetch(&archive, &dir, &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("downloading"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
