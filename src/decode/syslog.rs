//! Syslog lines: RFC 5424 (structured data included), RFC 3164, and rsyslog's file format.
//!
//! Formats: RFC 5424 section 6 (`<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG`, `-`
//! for a missing value, SD as `[id name="value" …]` with `\"`, `\\` and `\]` escaped); RFC 3164
//! section 4.1 (`<PRI>Mmm dd hh:mm:ss HOSTNAME TAG: MSG`, TAG often `app[pid]`); and
//! `RSYSLOG_FileFormat`, which is what rsyslog's `omkafka` sends when no template is given (its
//! module names that template as the default; rsyslog's documentation defines it as
//! `%TIMESTAMP:::date-rfc3339% %HOSTNAME% %syslogtag%%msg:::sp-if-no-1st-sp%%msg:::drop-last-lf%`):
//! `2026-11-26T22:00:00.123456+00:00 host app[42]: message`, without a priority.
//!
//! Lines with a priority are detected (`<` digits `>` then `1 ` or a month); the file format
//! looks like many applications' own lines, so it is read only where `syslog` is declared.
//! Fields: `priority`, `facility` and `severity` (by their RFC 5424 names: `auth`, `err`),
//! `timestamp`, `hostname`, `appname`, `procid`, `msgid`, and each structured data parameter
//! as `sd.<SD-ID>.<name>` (`sd.origin.ip`); `message` is MSG.

use super::DecodeError;

/// RFC 5424 section 6.2.1, table 1.
const FACILITIES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];

/// RFC 5424 section 6.2.1, table 2.
const SEVERITIES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A syslog line's parts.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Line<'a> {
    pub priority: Option<u8>,
    pub timestamp: Option<&'a str>,
    pub hostname: Option<&'a str>,
    pub appname: Option<&'a str>,
    pub procid: Option<&'a str>,
    pub msgid: Option<&'a str>,
    /// `(SD-ID, name, value)`; values are unescaped into `Line::parse`'s buffer: spans there.
    pub params: Vec<(&'a str, &'a str, (usize, usize))>,
    pub message: &'a str,
}

impl Line<'_> {
    pub fn facility(&self) -> Option<&'static str> {
        self.priority.map(|p| FACILITIES[(p >> 3) as usize])
    }

    pub fn severity(&self) -> Option<&'static str> {
        self.priority.map(|p| SEVERITIES[(p & 7) as usize])
    }
}

/// Whether an undeclared text record is a syslog line with a priority.
pub fn detect(line: &str) -> bool {
    let b = line.as_bytes();
    if b.first() != Some(&b'<') {
        return false;
    }
    let digits = b[1..].iter().take_while(|c| c.is_ascii_digit()).count();
    if !(1..=3).contains(&digits) || b.get(1 + digits) != Some(&b'>') {
        return false;
    }
    let rest = &line[2 + digits..];
    rest.starts_with("1 ") || MONTHS.iter().any(|m| rest.starts_with(m))
}

fn word(s: &str) -> (&str, &str) {
    match s.split_once(' ') {
        Some((w, rest)) => (w, rest),
        None => (s, ""),
    }
}

fn nil(s: &str) -> Option<&str> {
    (s != "-" && !s.is_empty()).then_some(s)
}

/// Reads a syslog line; structured data values are unescaped into `values`.
pub fn parse<'a>(line: &'a str, values: &mut String) -> Result<Line<'a>, DecodeError> {
    values.clear();
    let line = line.strip_suffix('\n').unwrap_or(line);
    let (priority, rest) = match line.strip_prefix('<') {
        Some(after) => {
            let (pri, rest) = after
                .split_once('>')
                .ok_or(DecodeError::BadSyslogPriority)?;
            // RFC 5424 6.2.1: one to three digits, no leading zero but for `0`, at most 191.
            let ok = (1..=3).contains(&pri.len())
                && pri.bytes().all(|c| c.is_ascii_digit())
                && !(pri.len() > 1 && pri.starts_with('0'));
            let p: u16 = pri
                .parse()
                .ok()
                .filter(|p| ok && *p <= 191)
                .ok_or(DecodeError::BadSyslogPriority)?;
            (Some(p as u8), rest)
        }
        None => (None, line),
    };
    if let (Some(_), Some(rest)) = (priority, rest.strip_prefix("1 ")) {
        return rfc5424(priority, rest, values);
    }
    if priority.is_some() && MONTHS.iter().any(|m| rest.starts_with(m)) {
        // `Mmm dd hh:mm:ss`: 15 bytes, the day padded with a space.
        let timestamp = rest.get(..15).ok_or(DecodeError::MalformedSyslog)?;
        let rest = rest[15..]
            .strip_prefix(' ')
            .ok_or(DecodeError::MalformedSyslog)?;
        return Ok(tagged(priority, timestamp, rest));
    }
    // rsyslog's file format: an RFC 3339 time, the host, the tag.
    let (timestamp, rest) = word(rest);
    let b = timestamp.as_bytes();
    let timelike = b.len() >= 19 && b[4] == b'-' && b[10] == b'T' && b[13] == b':';
    if !timelike {
        return Err(DecodeError::MalformedSyslog);
    }
    Ok(tagged(priority, timestamp, rest))
}

/// `HOSTNAME TAG MSG`, TAG being `app[pid]:` or `app:` (RFC 3164 4.1.3).
fn tagged<'a>(priority: Option<u8>, timestamp: &'a str, rest: &'a str) -> Line<'a> {
    let (hostname, rest) = word(rest);
    let (mut appname, mut procid, mut message) = (None, None, rest);
    let (tag, after) = word(rest);
    if let Some(tag) = tag.strip_suffix(':') {
        message = after;
        match tag.split_once('[') {
            Some((app, pid)) => {
                appname = nil(app);
                procid = pid.strip_suffix(']');
            }
            None => appname = nil(tag),
        }
    }
    Line {
        priority,
        timestamp: Some(timestamp),
        hostname: nil(hostname),
        appname,
        procid,
        message,
        ..Line::default()
    }
}

fn rfc5424<'a>(
    priority: Option<u8>,
    rest: &'a str,
    values: &mut String,
) -> Result<Line<'a>, DecodeError> {
    let (timestamp, rest) = word(rest);
    let (hostname, rest) = word(rest);
    let (appname, rest) = word(rest);
    let (procid, rest) = word(rest);
    let (msgid, mut rest) = word(rest);
    if msgid.is_empty() {
        return Err(DecodeError::MalformedSyslog);
    }
    let mut params = Vec::new();
    if let Some(after) = rest.strip_prefix('-') {
        rest = after;
    } else {
        while let Some(element) = rest.strip_prefix('[') {
            let end = element
                .find([' ', ']'])
                .ok_or(DecodeError::MalformedSyslog)?;
            let id = &element[..end];
            let mut at = &element[end..];
            loop {
                at = at.trim_start_matches(' ');
                if let Some(after) = at.strip_prefix(']') {
                    rest = after;
                    break;
                }
                let (name, after) = at.split_once("=\"").ok_or(DecodeError::MalformedSyslog)?;
                let start = values.len();
                let mut chars = after.char_indices();
                let close = loop {
                    match chars.next() {
                        Some((i, '"')) => break i,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, c @ ('"' | '\\' | ']'))) => values.push(c),
                            // Other backslashes are kept as written (RFC 5424 6.3.3).
                            Some((_, c)) => {
                                values.push('\\');
                                values.push(c);
                            }
                            None => return Err(DecodeError::MalformedSyslog),
                        },
                        Some((_, c)) => values.push(c),
                        None => return Err(DecodeError::MalformedSyslog),
                    }
                };
                params.push((id, name, (start, values.len())));
                at = &after[close + 1..];
            }
        }
        if params.is_empty() && !rest.starts_with(' ') && !rest.is_empty() {
            return Err(DecodeError::MalformedSyslog);
        }
    }
    let message = rest.strip_prefix(' ').unwrap_or(rest);
    Ok(Line {
        priority,
        timestamp: nil(timestamp),
        hostname: nil(hostname),
        appname: nil(appname),
        procid: nil(procid),
        msgid: nil(msgid),
        params,
        // A UTF-8 BOM says the message is UTF-8 (6.4); it is not part of the text.
        message: message.strip_prefix('\u{feff}').unwrap_or(message),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5424_with_structured_data() {
        // RFC 5424 6.5, example 3, with an escaped value.
        let mut v = String::new();
        let l = parse(
            r#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="App\"li\]cation" eventID="1011"][examplePriority@32473 class="high"] An application event log entry"#,
            &mut v,
        )
        .unwrap();
        assert_eq!(l.priority, Some(165));
        assert_eq!(
            (l.facility(), l.severity()),
            (Some("local4"), Some("notice"))
        );
        assert_eq!(l.hostname, Some("mymachine.example.com"));
        assert_eq!(
            (l.appname, l.procid, l.msgid),
            (Some("evntslog"), None, Some("ID47"))
        );
        let params: Vec<(&str, &str, &str)> = l
            .params
            .iter()
            .map(|(id, n, (a, b))| (*id, *n, &v[*a..*b]))
            .collect();
        assert_eq!(
            params,
            vec![
                ("exampleSDID@32473", "iut", "3"),
                ("exampleSDID@32473", "eventSource", "App\"li]cation"),
                ("exampleSDID@32473", "eventID", "1011"),
                ("examplePriority@32473", "class", "high"),
            ]
        );
        assert_eq!(l.message, "An application event log entry");
    }

    #[test]
    fn rfc3164_and_rsyslog_file_format() {
        let mut v = String::new();
        let l = parse(
            "<34>Oct 11 22:14:15 mymachine su[230]: 'su root' failed for lonvick on /dev/pts/8",
            &mut v,
        )
        .unwrap();
        assert_eq!((l.facility(), l.severity()), (Some("auth"), Some("crit")));
        assert_eq!(l.timestamp, Some("Oct 11 22:14:15"));
        assert_eq!(
            (l.hostname, l.appname, l.procid),
            (Some("mymachine"), Some("su"), Some("230"))
        );
        assert_eq!(l.message, "'su root' failed for lonvick on /dev/pts/8");
        let l = parse(
            "2026-11-26T22:00:00.123456+00:00 web-1 sshd[812]: Accepted publickey for deploy\n",
            &mut v,
        )
        .unwrap();
        assert_eq!(l.priority, None);
        assert_eq!(
            (l.hostname, l.appname, l.procid),
            (Some("web-1"), Some("sshd"), Some("812"))
        );
        assert_eq!(l.message, "Accepted publickey for deploy");
    }

    #[test]
    fn bad_priorities_and_shapes_are_refused() {
        let mut v = String::new();
        for bad in [
            "<192>1 - - - - - -",
            "<01>1 - - - - - -",
            "<1a>Oct 11 22:14:15 h t: m",
            "<5",
        ] {
            assert_eq!(
                parse(bad, &mut v).err(),
                Some(DecodeError::BadSyslogPriority),
                "{bad}"
            );
        }
        assert_eq!(
            parse("just text", &mut v).err(),
            Some(DecodeError::MalformedSyslog)
        );
        assert_eq!(
            parse(r#"<13>1 - h a - - [id x="open"#, &mut v).err(),
            Some(DecodeError::MalformedSyslog)
        );
        assert!(detect("<13>1 2026-11-26T22:00:00Z h a - - - hi"));
        assert!(detect("<999>Oct 11 22:14:15 h t: m"));
        assert!(!detect("<b>bold</b>"));
        assert!(!detect("2026-11-26T22:00:00Z web-1 sshd[1]: hi"));
    }
}
