//! Temporary stub (replaced by the real downloader).
use std::path::{Path, PathBuf};
pub const MAX_MEDIA_BYTES_PER_MESSAGE: u64 = 5 * 1024 * 1024;
pub struct Fetched {
    pub url: String,
    pub content_type: String,
    pub path: Option<PathBuf>,
    pub error: Option<String>,
}
pub fn client(_api_base: &url::Url) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .build()
        .map_err(|e| e.to_string())
}
pub async fn download_all(
    _http: &reqwest::Client,
    _creds: &crate::twilio::Creds,
    _sid: &str,
    media: &[crate::store::Media],
    _dir: &Path,
) -> Vec<Fetched> {
    media
        .iter()
        .map(|m| Fetched {
            url: m.url.clone(),
            content_type: m.content_type.clone(),
            path: None,
            error: Some("not implemented".into()),
        })
        .collect()
}
pub fn remove_files(paths: &[PathBuf]) {
    for p in paths {
        let _ = std::fs::remove_file(p);
    }
}
