//! Text cut to a byte budget (a column's width, a receiver's limit) without splitting a
//! UTF-8 character: registry names and gateway details are Chinese as often as not, and
//! a byte cut in the middle of one would not be a `str` at all.

/// The longest prefix of `s` that fits in `max_bytes`, ending on a character boundary.
///
/// std's `str::floor_char_boundary` does this from Rust 1.91; the workspace's
/// `rust-version` is older, so this is the one place that does it until then.
pub fn cut_bytes(s: &str, max_bytes: usize) -> &str {
    if s.len() <= max_bytes {
        return s;
    }
    let end = (0..=max_bytes)
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0);
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::cut_bytes;

    #[test]
    fn cuts_keep_whole_characters() {
        let cases = [
            ("hello", 10, "hello"),
            ("hello", 5, "hello"),
            ("hello", 3, "hel"),
            ("", 3, ""),
            ("hello", 0, ""),
            // 水 and 位 are 3 bytes each: 4 and 5 bytes hold only the first.
            ("水位", 2, ""),
            ("水位", 4, "水"),
            ("水位", 5, "水"),
            ("水位", 6, "水位"),
            ("a€b", 3, "a"),
        ];
        for (s, max, want) in cases {
            assert_eq!(cut_bytes(s, max), want, "{s:?} in {max} bytes");
        }
    }
}
