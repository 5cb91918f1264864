//! Is an executable statically linked? An ELF file (elf(5)) is dynamically linked exactly
//! when it has a `PT_INTERP` program header naming the dynamic loader.

use std::path::Path;

/// `PT_INTERP` (elf(5)).
const PT_INTERP: u32 = 3;

/// Whether the 64-bit little-endian ELF image `bytes` has no program interpreter.
/// `None` when it is not such an ELF image or its headers run past its end.
pub(crate) fn is_static(bytes: &[u8]) -> Option<bool> {
    if bytes.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let field = |at: usize, len: usize| bytes.get(at..at.checked_add(len)?);
    let u16_at = |at: usize| Some(u16::from_le_bytes(field(at, 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(field(at, 4)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(field(at, 8)?.try_into().ok()?));
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    if phentsize < 4 {
        return None;
    }
    for i in 0..phnum {
        let at = phoff.checked_add(i.checked_mul(phentsize)?)?;
        if u32_at(at)? == PT_INTERP {
            return Some(false);
        }
    }
    Some(true)
}

/// [`is_static`] of a file.
pub(crate) fn file_is_static(path: &Path) -> std::io::Result<Option<bool>> {
    Ok(is_static(&std::fs::read(path)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 64-bit little-endian ELF header with `phnum` program headers of type `kind` right
    /// after it.
    fn image(kinds: &[u32]) -> Vec<u8> {
        let mut bytes = vec![0u8; 64];
        bytes[..6].copy_from_slice(b"\x7fELF\x02\x01");
        bytes[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        bytes[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        bytes[0x38..0x3a].copy_from_slice(&(kinds.len() as u16).to_le_bytes());
        for kind in kinds {
            let mut ph = vec![0u8; 56];
            ph[..4].copy_from_slice(&kind.to_le_bytes());
            bytes.extend(ph);
        }
        bytes
    }

    #[test]
    fn interpreter_header_means_dynamic() {
        assert_eq!(is_static(&image(&[6, 1, 1])), Some(true));
        assert_eq!(is_static(&image(&[6, PT_INTERP, 1])), Some(false));
    }

    #[test]
    fn malformed_images_are_refused_without_panic() {
        assert_eq!(is_static(b"#!/bin/sh\n"), None);
        let mut truncated = image(&[1, 1]);
        truncated.truncate(100);
        assert_eq!(is_static(&truncated), None);
        let mut huge = image(&[]);
        huge[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        huge[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        assert_eq!(is_static(&huge), None);
    }

    #[test]
    fn system_shell_is_dynamic() {
        assert_eq!(file_is_static(Path::new("/bin/sh")).unwrap(), Some(false));
    }
}
