//! Batches between nodes (docs/cluster.md, "Batches"): consecutive messages that a node sends on
//! one subject with the same headers travel as one NATS message, whose [`BATCH`] header gives
//! their number and whose body is each payload after its length (4 bytes, big-endian).
//!
//! Why: each NATS message costs the sending node, nats-server and every receiving node a fixed
//! amount of work (subject, headers, a protocol line each way) that dwarfs a small MQTT payload;
//! one stream of messages on one topic (a device, a bridge, P1's and C1's shape) then ran at a
//! fraction of a single node's rate. Only messages already waiting are packed — the sender never
//! waits to fill a batch — so a quiet topic still sends each message as it comes, as one plain
//! NATS message without the header (the form every node has always read).
//!
//! Order is kept: a batch holds consecutive messages and is read in order. The headers (QoS,
//! expiry, properties, node) are the batch's, hence equal for all its messages. A `$share` queue
//! group gets a batch as one message: one node of the group takes all of it, and its router gives
//! each message to one local member.

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::mpsc;

/// The header of a batch: how many messages its body holds.
pub(super) const BATCH: &str = "Dynsec-Batch";
/// Messages per batch, at most.
pub(super) const MAX_MESSAGES: usize = 512;
/// A batch's body, at most (nats-server's `max_payload` is 1 MiB by default; a smaller one
/// bounds it further: [`Limits::for_server`]).
const MAX_BODY: usize = 256 * 1024;
const LENGTH: usize = 4;

/// What one batch may hold.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    messages: usize,
    body: usize,
}

impl Limits {
    /// The bounds for a server announcing `max_payload` (half of it, for the headers' room; 0:
    /// not known yet, nats-server's default assumed).
    pub(super) fn for_server(max_payload: usize) -> Limits {
        let max_payload = if max_payload == 0 { 1 << 20 } else { max_payload };
        Limits { messages: MAX_MESSAGES, body: MAX_BODY.min(max_payload / 2) }
    }
}

/// Collects payloads for one batch.
#[derive(Debug, Default)]
pub(super) struct Packer {
    payloads: Vec<Bytes>,
    body: usize,
}

impl Packer {
    /// Starts a batch with its first payload (which goes whatever its size).
    pub(super) fn new(first: Bytes) -> Packer {
        let body = LENGTH + first.len();
        Packer { payloads: vec![first], body }
    }

    /// Whether `payload` still fits.
    pub(super) fn fits(&self, payload: &Bytes, limits: Limits) -> bool {
        self.payloads.len() < limits.messages && self.body + LENGTH + payload.len() <= limits.body
    }

    pub(super) fn push(&mut self, payload: Bytes) {
        self.body += LENGTH + payload.len();
        self.payloads.push(payload);
    }

    /// The NATS message's body, and the [`BATCH`] header's value (`None` for one message, which
    /// goes as it is).
    pub(super) fn finish(mut self) -> (Bytes, Option<usize>) {
        if self.payloads.len() == 1 {
            return (self.payloads.pop().unwrap_or_default(), None);
        }
        let mut body = BytesMut::with_capacity(self.body);
        for payload in &self.payloads {
            // (Each payload is within `MAX_BODY`, or the batch's only one.)
            body.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
            body.put_slice(payload);
        }
        (body.freeze(), Some(self.payloads.len()))
    }
}

/// A sender's queue read batch by batch: [`Outbox::next`] opens a batch, [`Outbox::join_waiting`]
/// adds what already waits behind it, and the first message that cannot join is kept for the next
/// batch (order is kept).
pub(super) struct Outbox<T> {
    queued: mpsc::Receiver<T>,
    kept: Option<T>,
}

impl<T> Outbox<T> {
    pub(super) fn new(queued: mpsc::Receiver<T>) -> Outbox<T> {
        Outbox { queued, kept: None }
    }

    /// The message kept from the last batch, or the next one queued (`None`: the queue closed).
    pub(super) async fn next(&mut self) -> Option<T> {
        match self.kept.take() {
            Some(message) => Some(message),
            None => self.queued.recv().await,
        }
    }

    /// Offers each message already waiting to `join`, which takes it (`Ok`) or hands it back
    /// (`Err`, kept for [`Outbox::next`]; the batch ends there). Never waits.
    pub(super) fn join_waiting(&mut self, mut join: impl FnMut(T) -> Result<(), T>) {
        while let Ok(following) = self.queued.try_recv() {
            if let Err(back) = join(following) {
                self.kept = Some(back);
                return;
            }
        }
    }
}

/// A message body that does not hold what its header says (another program on the subject, or a
/// damaged message).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum BadBatch {
    #[error("batch header {0:?} is not a count of 2 to {MAX_MESSAGES}")]
    Count(String),
    #[error("batch body ends inside message {0}")]
    Truncated(usize),
    #[error("batch body has {0} bytes after its last message")]
    Trailing(usize),
}

/// The payloads a NATS message carries: its body, or each message of a batch (slices of the body,
/// not copies).
pub(super) fn payloads(message: &async_nats::Message) -> Result<Vec<Bytes>, BadBatch> {
    let count = message.headers.as_ref().and_then(|h| h.get(BATCH)).map(|v| v.as_str());
    unpack(&message.payload, count)
}

fn unpack(body: &Bytes, count: Option<&str>) -> Result<Vec<Bytes>, BadBatch> {
    let Some(count) = count else { return Ok(vec![body.clone()]) };
    let number = count.parse::<usize>().ok().filter(|n| (2..=MAX_MESSAGES).contains(n));
    let number = number.ok_or_else(|| BadBatch::Count(count.chars().take(32).collect()))?;
    let mut payloads = Vec::with_capacity(number);
    let mut at = 0usize;
    for index in 0..number {
        let length = body
            .get(at..at + LENGTH)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or(BadBatch::Truncated(index))?;
        at += LENGTH;
        let end = at.checked_add(length).filter(|end| *end <= body.len()).ok_or(BadBatch::Truncated(index))?;
        payloads.push(body.slice(at..end));
        at = end;
    }
    if at != body.len() {
        return Err(BadBatch::Trailing(body.len() - at));
    }
    Ok(payloads)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(payloads: &[&[u8]], limits: Limits) -> Vec<(Bytes, Option<usize>)> {
        let mut batches = Vec::new();
        let mut packer: Option<Packer> = None;
        for payload in payloads {
            let payload = Bytes::copy_from_slice(payload);
            match packer.as_mut() {
                Some(p) if p.fits(&payload, limits) => p.push(payload),
                _ => {
                    batches.extend(packer.take().map(Packer::finish));
                    packer = Some(Packer::new(payload));
                }
            }
        }
        batches.extend(packer.map(Packer::finish));
        batches
    }

    #[test]
    fn payloads_come_back_in_order_including_empty_ones() {
        let limits = Limits::for_server(1 << 20);
        let sent: Vec<&[u8]> = vec![b"one", b"", b"three", &[0u8; 300]];
        let batches = pack(&sent, limits);
        assert_eq!(batches.len(), 1);
        let (body, count) = &batches[0];
        assert_eq!(*count, Some(4));
        let back = unpack(body, Some("4")).expect("well formed");
        assert_eq!(back.iter().map(|b| b.as_ref()).collect::<Vec<_>>(), sent);
    }

    #[test]
    fn one_message_goes_as_it_is() {
        let batches = pack(&[b"alone"], Limits::for_server(1 << 20));
        assert_eq!(batches, vec![(Bytes::from_static(b"alone"), None)]);
        assert_eq!(unpack(&Bytes::from_static(b"alone"), None).unwrap(), vec![Bytes::from_static(b"alone")]);
    }

    #[test]
    fn limits_split_batches_by_count_and_by_size() {
        let many = vec![&b"x"[..]; MAX_MESSAGES + 1];
        let batches = pack(&many, Limits::for_server(1 << 20));
        assert_eq!(batches.iter().map(|(_, n)| n.unwrap_or(1)).collect::<Vec<_>>(), vec![MAX_MESSAGES, 1]);
        // A server with a small max_payload: 100 bytes of body per batch.
        let big = [0u8; 40];
        let batches = pack(&[&big, &big, &big, &big], Limits::for_server(200));
        assert_eq!(batches.iter().map(|(_, n)| n.unwrap_or(1)).collect::<Vec<_>>(), vec![2, 2]);
        // A payload larger than the bound still goes, alone.
        let huge = [0u8; 500];
        let batches = pack(&[&big, &huge, &big], Limits::for_server(200));
        assert_eq!(batches.iter().map(|(_, n)| n.unwrap_or(1)).collect::<Vec<_>>(), vec![1, 1, 1]);
    }

    #[test]
    fn damaged_batches_are_refused_not_misread() {
        let (body, _) = pack(&[b"ab", b"cd"], Limits::for_server(1 << 20)).remove(0);
        assert_eq!(unpack(&body, Some("3")), Err(BadBatch::Truncated(2)));
        assert_eq!(unpack(&body.slice(..body.len() - 1), Some("2")), Err(BadBatch::Truncated(1)));
        let mut longer = body.to_vec();
        longer.push(0);
        assert_eq!(unpack(&Bytes::from(longer), Some("2")), Err(BadBatch::Trailing(1)));
        for count in ["", "1", "0", "-2", "x", "99999999999999999999999", "513"] {
            assert!(matches!(unpack(&body, Some(count)), Err(BadBatch::Count(_))), "{count:?}");
        }
        // A length field pointing past the end (u32::MAX) does not overflow.
        let mut forged = vec![0xff, 0xff, 0xff, 0xff];
        forged.extend_from_slice(b"abcd");
        assert_eq!(unpack(&Bytes::from(forged), Some("2")), Err(BadBatch::Truncated(0)));
    }
}
