//! Media the agent sends (CONTRACT §10): the bytes in area `M`, what the media route
//! serves them as and when they may go in area `B`, both by token. They are written in
//! the batch that queues the send (a crash before Twilio fetches them loses nothing),
//! marked accepted in the batch that records the send as sent, and removed by
//! [`Store::prune_media`] once [`crate::mms::expired`] says so.

use serde::{Deserialize, Serialize};

use super::area::Batch;
use super::{dec, enc, OutboundRecord, Store, StoreError};

/// One item to store with a send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaBlob {
    /// 32 lowercase hex digits (128 random bits).
    pub token: String,
    pub meta: MediaMeta,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaMeta {
    pub content_type: String,
    pub filename: String,
    pub len: u64,
    /// The outbound record (the send's first part) whose `media_urls` name it.
    pub send: u64,
    pub created_ms: u64,
    /// When Twilio accepted the send; `None` while it is queued, unknown or failed.
    #[serde(default)]
    pub accepted_ms: Option<u64>,
    /// The SID Twilio gave the send (its final status may keep the media longer).
    #[serde(default)]
    pub sid: Option<String>,
}

/// The token of one of our media URLs, `…/media/<token>/<filename>`.
pub(crate) fn token_of(url: &str) -> Option<&str> {
    let rest = url.split("/media/").nth(1)?;
    let token = rest.split('/').next()?;
    (token.len() == 32 && token.bytes().all(|b| b.is_ascii_hexdigit())).then_some(token)
}

impl Store {
    /// Adds `blobs` to the batch `b` (the one that queues their send).
    pub(crate) fn put_media_into(&self, b: &mut Batch, blobs: &[MediaBlob]) {
        for m in blobs {
            b.insert(&self.media_index, m.token.as_bytes(), enc(&m.meta));
            b.insert(&self.media_blobs, m.token.as_bytes(), m.data.clone());
        }
    }

    /// Stores `blobs`; on the writer thread this joins the round's one batch.
    pub fn put_media(&self, blobs: &[MediaBlob]) -> Result<(), StoreError> {
        if blobs.is_empty() {
            return Ok(());
        }
        let mut b = Batch::new();
        self.put_media_into(&mut b, blobs);
        self.apply(b)
    }

    pub fn media_meta(&self, token: &str) -> Result<Option<MediaMeta>, StoreError> {
        match self.media_index.get(token.as_bytes())? {
            Some(v) => dec(&v).map(Some),
            None => Ok(None),
        }
    }

    pub fn media_data(&self, token: &str) -> Result<Option<sled::IVec>, StoreError> {
        self.media_blobs.get(token.as_bytes())
    }

    /// Whether the send `id` is still kept (queued, in flight, unknown, or failed and
    /// kept for `queue list`): its media must stay while it may still go out.
    pub fn send_kept(&self, id: u64) -> Result<bool, StoreError> {
        let key = super::Seq(id).bytes();
        Ok(self.outbound.contains_key(key)? || self.finished.contains_key(key)?)
    }

    /// The send `r` went out (Twilio accepted it): its media's hour starts now.
    pub(crate) fn media_accepted_into(
        &self,
        b: &mut Batch,
        r: &OutboundRecord,
        at_ms: u64,
        sid: Option<&str>,
    ) -> Result<(), StoreError> {
        for url in &r.media_urls {
            let Some(token) = token_of(url) else { continue };
            let Some(mut meta) = self.media_meta(token)? else {
                continue;
            };
            if meta.send != r.id {
                continue;
            }
            meta.accepted_ms = Some(at_ms);
            meta.sid = sid.map(str::to_string);
            b.insert(&self.media_index, token.as_bytes(), enc(&meta));
        }
        Ok(())
    }

    /// Whether any media is stored (the prune skips its write when none is).
    pub fn has_media(&self) -> Result<bool, StoreError> {
        Ok(self.media_index.first()?.is_some())
    }

    /// Every stored item's token and what is known of it, for the prune.
    pub fn media_list(&self) -> Result<Vec<(String, MediaMeta)>, StoreError> {
        let mut out = Vec::new();
        for item in self.media_index.iter() {
            let (k, v) = item?;
            let token = String::from_utf8_lossy(&k).into_owned();
            match dec::<MediaMeta>(&v) {
                Ok(m) => out.push((token, m)),
                Err(e) => self.quarantine(&self.media_index, &k, &e),
            }
        }
        Ok(out)
    }

    /// Removes the items `tokens` (bytes and index).
    pub fn remove_media(&self, tokens: &[String]) -> Result<(), StoreError> {
        if tokens.is_empty() {
            return Ok(());
        }
        let mut b = Batch::new();
        for t in tokens {
            b.remove(&self.media_index, t.as_bytes());
            b.remove(&self.media_blobs, t.as_bytes());
        }
        self.apply(b)
    }

    /// Removes what [`crate::mms::expired`] says may go, given each item's send is
    /// kept or not and whether its SID's status is final (`terminal`, the caller's
    /// judgement: the store does not know Twilio's statuses). Returns how many went.
    pub fn prune_media(
        &self,
        now: u64,
        ttl_ms: u64,
        terminal: impl Fn(&str) -> bool,
    ) -> Result<usize, StoreError> {
        let mut gone = Vec::new();
        for (token, meta) in self.media_list()? {
            let kept = self.send_kept(meta.send)?;
            let fin = match &meta.sid {
                Some(sid) => self.delivery_status(sid)?.is_some_and(|s| terminal(&s)),
                None => false,
            };
            if crate::mms::expired(meta.accepted_ms, kept, fin, now, ttl_ms) {
                gone.push(token);
            }
        }
        self.remove_media(&gone)?;
        Ok(gone.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stored with the send, kept while it waits, marked when Twilio accepted it (by
    /// the write that records it sent), deleted after the hour and its final status.
    #[test]
    fn media_lives_with_its_send() {
        let dir = tempfile::tempdir().expect("temp dir");
        let st = Store::open(&dir.path().join("state")).expect("store");
        let token = "0123456789abcdef0123456789abcdef".to_string();
        let to = crate::phone::E164::parse("+15557654321").expect("number");
        let mut rec = st
            .new_outbound("default", to, String::new(), super::super::Purpose::Cli, 0)
            .expect("record");
        rec.media_urls = vec![format!("https://gw.example/media/{token}/a.png")];
        st.enqueue(std::slice::from_ref(&rec)).expect("enqueue");
        let blob = MediaBlob {
            token: token.clone(),
            meta: MediaMeta {
                content_type: "image/png".into(),
                filename: "a.png".into(),
                len: 3,
                send: rec.id,
                created_ms: 0,
                accepted_ms: None,
                sid: None,
            },
            data: b"abc".to_vec(),
        };
        st.put_media(&[blob]).expect("put");
        let h = 3_600_000;
        let final_status = |s: &str| s == "delivered";
        assert_eq!(st.prune_media(10 * h, h, final_status).expect("prune"), 0);
        st.complete_send(&rec, 1, 100, Some(("SM1", "queued")), false)
            .expect("sent");
        let meta = st.media_meta(&token).expect("read").expect("kept");
        assert_eq!(meta.accepted_ms, Some(100));
        assert_eq!(meta.sid.as_deref(), Some("SM1"));
        // The hour is over but the status is not final: kept.
        assert_eq!(st.prune_media(100 + h, h, final_status).expect("prune"), 0);
        st.record_status("SM1", "delivered", None, 200)
            .expect("status");
        assert_eq!(st.prune_media(100 + h, h, final_status).expect("prune"), 1);
        assert!(st.media_data(&token).expect("read").is_none());
        assert!(!st.has_media().expect("read"));
    }

    #[test]
    fn token_of_table() {
        let t = "0123456789abcdef0123456789abcdef";
        let cases = [
            (format!("https://gw.example/media/{t}/a.png"), Some(t)),
            (format!("https://gw.example/x/media/{t}/a.png"), Some(t)),
            ("https://gw.example/media/short/a.png".to_string(), None),
            ("https://cdn.example/pic.png".to_string(), None),
        ];
        for (url, want) in cases {
            assert_eq!(token_of(&url), want, "{url}");
        }
    }
}
