//! `http_dir`: plain HTTP GET and HEAD on a websockets listener are answered with the files of
//! one directory (mosquitto's option; a browser page and its scripts can come from the broker
//! itself). Only regular files inside the directory are served: `..`, and symbolic links leading
//! out of it, are refused. One request per connection.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::answer::{ANSWER_TIMEOUT, Answer};

/// A file ready to be sent.
pub(super) struct File {
    file: tokio::fs::File,
    length: u64,
    content_type: &'static str,
}

/// Resolves the request target in `dir` and opens the file.
pub(super) async fn open(dir: &Path, target: &str) -> Result<File, Answer> {
    let relative = relative_path(target).ok_or_else(|| Answer::error(400, "invalid path"))?;
    let root = tokio::fs::canonicalize(dir).await.map_err(|_| Answer::error(404, "http_dir is not readable"))?;
    let mut path = root.join(&relative);
    if tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_dir()) {
        path.push("index.html");
    }
    let path = tokio::fs::canonicalize(&path).await.map_err(|_| Answer::error(404, "no such file"))?;
    if !path.starts_with(&root) {
        return Err(Answer::error(403, "outside http_dir"));
    }
    let file = tokio::fs::File::open(&path).await.map_err(|_| Answer::error(403, "file not readable"))?;
    let metadata = file.metadata().await.map_err(|_| Answer::error(403, "file not readable"))?;
    if !metadata.is_file() {
        return Err(Answer::error(404, "no such file"));
    }
    Ok(File { file, length: metadata.len(), content_type: content_type(&path) })
}

/// Writes the file (or only its head) and closes the socket. The time is bounded per file size:
/// a client that stops reading is not kept forever.
pub(super) async fn send<S: AsyncWrite + Unpin>(stream: &mut S, mut file: File, head_only: bool) {
    let answer = Answer { status: 200, headers: String::new(), body: Vec::new(), content_type: file.content_type };
    let head = answer.head(file.length);
    let per_mebibyte = ANSWER_TIMEOUT * 5;
    let timeout =
        ANSWER_TIMEOUT + per_mebibyte * u32::try_from(file.length >> 20).unwrap_or(u32::MAX / 16).min(1 << 12);
    let _ = tokio::time::timeout(timeout, async {
        stream.write_all(head.as_bytes()).await?;
        if !head_only {
            tokio::io::copy(&mut file.file, stream).await?;
        }
        stream.shutdown().await
    })
    .await;
}

/// The request target as a path relative to `http_dir`: query dropped, percent-escapes decoded,
/// `.` segments skipped; `None` for `..`, NUL, or a target that is not an absolute path.
fn relative_path(target: &str) -> Option<PathBuf> {
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let path = path.strip_prefix('/')?;
    let mut relative = PathBuf::new();
    for segment in path.split('/') {
        let segment = percent_decode(segment)?;
        match segment.as_str() {
            "" | "." => {}
            ".." => return None,
            s if s.contains(['\0', '/']) => return None,
            s => relative.push(s),
        }
    }
    Some(relative)
}

fn percent_decode(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

fn content_type(path: &Path) -> &'static str {
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or_default().to_ascii_lowercase();
    match extension.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_map_inside_the_directory_only() {
        assert_eq!(relative_path("/"), Some(PathBuf::new()));
        assert_eq!(relative_path("/a/b.js?v=1"), Some(PathBuf::from("a/b.js")));
        assert_eq!(relative_path("/./a//b%20c.html"), Some(PathBuf::from("a/b c.html")));
        for bad in ["/../etc/passwd", "/a/%2e%2e/%2e%2e/x", "/a%2f..%2f..", "/%00", "relative", "/%zz", "/%"] {
            assert_eq!(relative_path(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn files_outside_or_missing_are_refused() {
        let dir = std::env::temp_dir().join(format!("dynsec-http-dir-{}", std::process::id()));
        let outside = dir.join("outside.txt");
        let root = dir.join("www");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(&outside, "secret").unwrap();
        std::fs::write(root.join("index.html"), "<p>hi</p>").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link.txt")).unwrap();
        let index = open(&root, "/").await.expect("index.html");
        assert_eq!((index.length, index.content_type), (9, "text/html; charset=utf-8"));
        assert_eq!(open(&root, "/link.txt").await.err().map(|a| a.status), Some(403));
        assert_eq!(open(&root, "/missing.js").await.err().map(|a| a.status), Some(404));
        assert_eq!(open(&root, "/../outside.txt").await.err().map(|a| a.status), Some(400));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
