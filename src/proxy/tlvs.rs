//! Version 2's TLVs: checked as a sequence, each known type checked for its form, and the
//! CRC32c of the whole header.

use super::*;

/// The TLVs of `block`, which starts at offset `base` of the header; `in_ssl` when `block`
/// is an SSL TLV's sub-TLVs, where another SSL TLV is refused before it is looked into: so
/// the nesting is at most one deep, whatever a 64 KiB header holds (the parser recursed
/// once per level before, and a header of nested SSL TLVs overflowed the stack).
pub(super) fn parse_tlvs(
    mut block: &[u8],
    base: usize,
    in_ssl: bool,
) -> Result<Vec<(u8, Vec<u8>)>, ProxyError> {
    use ProxyErrorKind::*;
    let mut tlvs = Vec::new();
    let mut at = base;
    while !block.is_empty() {
        if block.len() < 3 {
            return Err(ProxyError::new(
                at,
                BadLength,
                format!(
                    "{} bytes left after the last TLV; a TLV takes at least 3",
                    block.len()
                ),
            ));
        }
        let kind = block[0];
        let len = usize::from(u16::from_be_bytes([block[1], block[2]]));
        let Some(value) = block.get(3..3 + len) else {
            return Err(ProxyError::new(
                at,
                BadLength,
                format!(
                    "TLV {kind:#04x} has length {len}, and {} bytes are left",
                    block.len() - 3
                ),
            ));
        };
        check_tlv(kind, value, at, in_ssl)?;
        if kind == tlv::CRC32C && !in_ssl && tlvs.iter().any(|(k, _)| *k == tlv::CRC32C) {
            // Each checksum would be checked with only itself zeroed, and no encoder can
            // write two that both hold (`with_tlv` refuses a second one too).
            return Err(ProxyError::new(
                at,
                BadTlv,
                "a second CRC32C TLV: a header has one checksum",
            ));
        }
        tlvs.push((kind, value.to_vec()));
        block = &block[3 + len..];
        at += 3 + len;
    }
    Ok(tlvs)
}

pub(super) fn check_tlv(kind: u8, value: &[u8], at: usize, in_ssl: bool) -> Result<(), ProxyError> {
    use ProxyErrorKind::*;
    let bad = |detail: String| Err(ProxyError::new(at, BadTlv, detail));
    match kind {
        tlv::CRC32C if value.len() != 4 => bad(format!(
            "the CRC32C TLV has {} bytes; it has 4",
            value.len()
        )),
        tlv::UNIQUE_ID if value.len() > 128 => bad(format!(
            "the UNIQUE_ID TLV has {} bytes; it has at most 128",
            value.len()
        )),
        tlv::SSL if in_ssl => bad("an SSL TLV inside an SSL TLV".to_owned()),
        tlv::SSL => {
            if value.len() < 5 {
                return bad(format!(
                    "the SSL TLV has {} bytes; it has at least 5 (client, verify)",
                    value.len()
                ));
            }
            parse_tlvs(&value[5..], at + 3 + 5, true).map(drop)
        }
        _ => Ok(()),
    }
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as the CRC32C TLV uses.
pub(crate) fn crc32c(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0x82F6_3B78 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in bytes {
        crc = TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}
