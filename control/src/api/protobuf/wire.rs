//! The protobuf wire format, read field by field.

/// One field's value as the wire carries it.
#[derive(Debug, Clone, Copy)]
pub enum WireValue<'a> {
    Varint(u64),
    /// Length-delimited: strings, bytes, messages, packed numbers.
    Bytes(&'a [u8]),
    /// A fixed 32- or 64-bit value (no Kubernetes field uses one; skipped).
    Fixed,
}

pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.bytes.get(self.at).ok_or("a varint runs past the end")?;
            self.at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("a varint is longer than 10 bytes".into())
    }

    /// The next varint, or `None` at the end (packed repeated numbers).
    pub fn varint_opt(&mut self) -> Result<Option<u64>, String> {
        if self.at == self.bytes.len() { Ok(None) } else { self.varint().map(Some) }
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], String> {
        let end =
            self.at.checked_add(len).filter(|e| *e <= self.bytes.len()).ok_or("a field runs past the end")?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    /// The next field number and value, or `None` at the end.
    pub fn next(&mut self) -> Result<Option<(u64, WireValue<'a>)>, String> {
        if self.at == self.bytes.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let (number, wire_type) = (key >> 3, key & 7);
        if number == 0 {
            return Err("field number 0".into());
        }
        let value = match wire_type {
            0 => WireValue::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                WireValue::Fixed
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| "a length overflows")?;
                WireValue::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                WireValue::Fixed
            }
            other => return Err(format!("unsupported wire type {other}")),
        };
        Ok(Some((number, value)))
    }
}
