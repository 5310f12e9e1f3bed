//! Syslog message parsing: RFC 5424 and RFC 3164 (BSD), pure functions without I/O.
//!
//! [`parse`] never loses a message: what does not parse comes back as a record whose
//! `message` is the raw text, `format` is `raw` and `parse_error` says what was wrong.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};

use crate::record::LogRecord;

/// Parses one syslog message received at `received_ns` from `peer`. `host` falls back to the
/// peer address when the message does not name one.
pub fn parse(bytes: &[u8], received_ns: i64, peer: &str) -> LogRecord {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end_matches(['\n', '\r', '\0']);
    let mut rec = LogRecord {
        received_ns,
        peer: peer.to_owned(),
        ..LogRecord::default()
    };
    let result = parse_pri(text).and_then(|(pri, rest)| {
        if let Some(after) = rest.strip_prefix("1 ") {
            parse_5424(after, &mut rec).map(|()| "rfc5424")
        } else {
            parse_3164(rest, received_ns, &mut rec).map(|()| "rfc3164")
        }
        .map(|f| (pri, f))
    });
    match result {
        Ok((pri, format)) => {
            rec.facility = Some(pri / 8);
            rec.severity = Some(pri % 8);
            rec.format = format.to_owned();
        }
        Err(err) => {
            rec = LogRecord {
                received_ns,
                peer: peer.to_owned(),
                message: text.to_owned(),
                format: "raw".to_owned(),
                parse_error: Some(err),
                ..LogRecord::default()
            };
        }
    }
    if rec.host.is_empty() {
        rec.host = peer_host(peer);
    }
    rec
}

/// The host part of `ip:port` / `[v6]:port`.
fn peer_host(peer: &str) -> String {
    match peer.parse::<std::net::SocketAddr>() {
        Ok(a) => a.ip().to_string(),
        Err(_) => peer.to_owned(),
    }
}

/// `<PRI>` with PRI 0..=191 (RFC 5424 §6.2.1: 1 to 3 digits, no leading zeros but "0").
fn parse_pri(text: &str) -> Result<(u8, &str), String> {
    let rest = text
        .strip_prefix('<')
        .ok_or_else(|| "missing PRI: the message does not start with '<'".to_owned())?;
    let end = rest
        .find('>')
        .filter(|&e| e <= 3)
        .ok_or_else(|| "bad PRI: expected '<' 1 to 3 digits '>'".to_owned())?;
    let digits = &rest[..end];
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
    {
        return Err(format!("bad PRI \"{digits}\": expected a number 0 to 191"));
    }
    let pri: u16 = digits
        .parse()
        .map_err(|_| format!("bad PRI \"{digits}\""))?;
    let pri = u8::try_from(pri)
        .ok()
        .filter(|p| *p <= 191)
        .ok_or_else(|| format!("bad PRI {pri}: expected 0 to 191"))?;
    Ok((pri, &rest[end + 1..]))
}

/// Splits off one space-terminated field.
fn field<'a>(rest: &mut &'a str, name: &str) -> Result<&'a str, String> {
    let (f, r) = rest
        .split_once(' ')
        .ok_or_else(|| format!("RFC 5424 header ends before {name}"))?;
    *rest = r;
    Ok(f)
}

fn nil(f: &str) -> String {
    if f == "-" {
        String::new()
    } else {
        f.to_owned()
    }
}

/// RFC 5424 after `<PRI>1 `: TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD [SP MSG].
fn parse_5424(text: &str, rec: &mut LogRecord) -> Result<(), String> {
    let mut rest = text;
    let ts = field(&mut rest, "HOSTNAME")?;
    if ts != "-" {
        let t = DateTime::parse_from_rfc3339(ts)
            .map_err(|e| format!("bad RFC 5424 TIMESTAMP \"{ts}\": {e}"))?;
        rec.timestamp_ns = t.timestamp_nanos_opt();
    }
    rec.host = nil(field(&mut rest, "APP-NAME")?);
    rec.app = nil(field(&mut rest, "PROCID")?);
    rec.procid = nil(field(&mut rest, "MSGID")?);
    // MSGID may be the last header field of a message without SD (invalid) – require SD.
    rec.msgid = nil(field(&mut rest, "STRUCTURED-DATA")?);
    let (sd, msg) = split_sd(rest)?;
    rec.structured_data = if sd == "-" {
        String::new()
    } else {
        sd.to_owned()
    };
    let msg = msg.strip_prefix('\u{feff}').unwrap_or(msg);
    rec.message = msg.to_owned();
    Ok(())
}

/// Splits `SD [SP MSG]`, validating the SD-ELEMENT syntax (escapes `\"`, `\\`, `\]`).
fn split_sd(text: &str) -> Result<(&str, &str), String> {
    if let Some(msg) = text.strip_prefix('-') {
        return match msg.strip_prefix(' ') {
            Some(m) => Ok(("-", m)),
            None if msg.is_empty() => Ok(("-", "")),
            None => Err("bad STRUCTURED-DATA: expected ' ' after '-'".to_owned()),
        };
    }
    let bytes = text.as_bytes();
    let mut i = 0;
    if bytes.first() != Some(&b'[') {
        return Err("bad STRUCTURED-DATA: expected '-' or '['".to_owned());
    }
    while bytes.get(i) == Some(&b'[') {
        let mut in_quotes = false;
        i += 1;
        loop {
            match bytes.get(i) {
                None => return Err("bad STRUCTURED-DATA: unterminated SD-ELEMENT".to_owned()),
                Some(b'\\') if in_quotes => i += 2,
                Some(b'"') => {
                    in_quotes = !in_quotes;
                    i += 1;
                }
                Some(b']') if !in_quotes => {
                    i += 1;
                    break;
                }
                Some(_) => i += 1,
            }
        }
    }
    let (sd, rest) = text.split_at(i);
    match rest.strip_prefix(' ') {
        Some(m) => Ok((sd, m)),
        None if rest.is_empty() => Ok((sd, "")),
        None => Err("bad STRUCTURED-DATA: expected ' ' after the last SD-ELEMENT".to_owned()),
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// RFC 3164 after `<PRI>`: `Mmm dd hh:mm:ss [HOSTNAME] TAG[PID]: MSG`. The timestamp has no
/// year and no zone: it is read as UTC in the year that puts it closest to `received_ns`.
fn parse_3164(text: &str, received_ns: i64, rec: &mut LogRecord) -> Result<(), String> {
    if text.len() < 16 || !text.is_char_boundary(15) || text.as_bytes()[15] != b' ' {
        return Err("bad RFC 3164 TIMESTAMP: expected \"Mmm dd hh:mm:ss \"".to_owned());
    }
    let ts = &text[..15];
    rec.timestamp_ns = Some(bsd_timestamp(ts, received_ns)?);
    let rest = &text[16..];
    // The HOSTNAME is optional in practice (local senders omit it): a first word that ends
    // in ':' or carries '[' is the TAG.
    let (first, after) = rest.split_once(' ').unwrap_or((rest, ""));
    let (host, tagged) = if first.ends_with(':') || first.contains('[') || after.is_empty() {
        ("", rest)
    } else {
        (first, after)
    };
    rec.host = host.to_owned();
    let tag_end = tagged.find([':', '[', ' ']).unwrap_or(tagged.len());
    let (tag, mut msg) = tagged.split_at(tag_end);
    if let Some(r) = msg.strip_prefix('[')
        && let Some((pid, r)) = r.split_once(']')
    {
        rec.procid = pid.to_owned();
        msg = r;
    }
    if tag_end > 0 && msg.starts_with(':') {
        rec.app = tag.to_owned();
        msg = &msg[1..];
        msg = msg.strip_prefix(' ').unwrap_or(msg);
        rec.message = msg.to_owned();
    } else {
        // No TAG: the whole content is the message.
        rec.procid.clear();
        rec.message = tagged.to_owned();
    }
    Ok(())
}

fn bsd_timestamp(ts: &str, received_ns: i64) -> Result<i64, String> {
    let bad = || format!("bad RFC 3164 TIMESTAMP \"{ts}\": expected \"Mmm dd hh:mm:ss\"");
    let month = MONTHS.iter().position(|m| *m == &ts[..3]).ok_or_else(bad)?;
    let day: u32 = ts[4..6].trim_start().parse().map_err(|_| bad())?;
    let hms: Vec<u32> = ts[7..]
        .split(':')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    let [h, m, s] = hms[..] else {
        return Err(bad());
    };
    let now = Utc.timestamp_nanos(received_ns);
    let month = u32::try_from(month + 1).map_err(|_| bad())?;
    let at = |year: i32| {
        NaiveDate::from_ymd_opt(year, month, day)
            .and_then(|d| d.and_hms_opt(h, m, s))
            .map(|t| t.and_utc())
    };
    // The year closest to the receive time: a December message read in January is last year's.
    let candidates = [now.year() - 1, now.year(), now.year() + 1];
    let best = candidates
        .iter()
        .filter_map(|y| at(*y))
        .min_by_key(|t| (*t - now).num_seconds().abs())
        .ok_or_else(bad)?;
    best.timestamp_nanos_opt().ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_000_000_000_000_000; // 2026-11-18

    #[test]
    fn rfc5424_with_structured_data() {
        let r = parse(
            b"<165>1 2026-11-18T10:00:00.5Z web01 nginx 42 ID47 [ex@1 a=\"x\\]y\"][b c=\"d\"] \xEF\xBB\xBFhello world\n",
            NOW,
            "10.0.0.1:5000",
        );
        assert_eq!(r.parse_error, None);
        assert_eq!(r.format, "rfc5424");
        assert_eq!((r.facility, r.severity), (Some(20), Some(5)));
        assert_eq!(r.timestamp_ns, Some(1_794_996_000_500_000_000));
        assert_eq!(
            (&*r.host, &*r.app, &*r.procid, &*r.msgid),
            ("web01", "nginx", "42", "ID47")
        );
        assert_eq!(r.structured_data, "[ex@1 a=\"x\\]y\"][b c=\"d\"]");
        assert_eq!(r.message, "hello world");
    }

    #[test]
    fn rfc5424_nil_fields_take_the_peer_as_host() {
        let r = parse(b"<13>1 - - - - - -", NOW, "10.0.0.1:5000");
        assert_eq!(r.parse_error, None);
        assert_eq!((&*r.host, &*r.app, &*r.message), ("10.0.0.1", "", ""));
        assert_eq!(r.timestamp_ns, None);
    }

    #[test]
    fn rfc3164_with_and_without_hostname() {
        let r = parse(
            b"<34>Nov 18 10:00:01 mymachine su[77]: 'su root' failed",
            NOW,
            "p",
        );
        assert_eq!(r.parse_error, None);
        assert_eq!(r.format, "rfc3164");
        assert_eq!((r.facility, r.severity), (Some(4), Some(2)));
        assert_eq!(
            (&*r.host, &*r.app, &*r.procid, &*r.message),
            ("mymachine", "su", "77", "'su root' failed")
        );
        assert_eq!(r.timestamp_ns, Some(1_794_996_001_000_000_000));
        let r = parse(b"<13>Nov  8 01:02:03 cron: job done", NOW, "10.1.1.1:9");
        assert_eq!(
            (&*r.host, &*r.app, &*r.message),
            ("10.1.1.1", "cron", "job done")
        );
    }

    #[test]
    fn rfc3164_december_read_in_january_is_last_year() {
        let jan = Utc
            .with_ymd_and_hms(2027, 1, 1, 0, 0, 5)
            .unwrap()
            .timestamp_nanos_opt()
            .unwrap();
        let r = parse(b"<13>Dec 31 23:59:59 h app: m", jan, "p");
        let want = Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 59).unwrap();
        assert_eq!(r.timestamp_ns, want.timestamp_nanos_opt());
    }

    #[test]
    fn garbage_is_kept_raw_with_the_reason() {
        for (input, reason) in [
            (&b"hello there"[..], "missing PRI"),
            (b"<999>1 - - - - - -", "bad PRI 999"),
            (
                b"<13>1 yesterday h a - - - m",
                "bad RFC 5424 TIMESTAMP \"yesterday\"",
            ),
            (b"<13>1 - h a - - [unterminated", "unterminated SD-ELEMENT"),
            (b"<13>Foo 18 10:00:01 h a: m", "bad RFC 3164 TIMESTAMP"),
        ] {
            let r = parse(input, NOW, "10.0.0.9:1");
            assert_eq!(r.format, "raw");
            let err = r.parse_error.unwrap();
            assert!(err.contains(reason), "{err:?} lacks {reason:?}");
            assert_eq!(r.message.as_bytes(), input);
            assert_eq!(r.host, "10.0.0.9");
        }
    }
}
