//! Every answer has a ceiling: a body is read as a stream against its route's limit, and one
//! that runs past it is dropped unread (a transient failure), never allocated whole. The limits
//! come from the contract (docs/emulator.md) with a stated margin; docs/security.md
//! has the table.

use bytes::{Bytes, BytesMut};

use super::error::ApiError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ceiling {
    /// The route's label in `sbw_api_requests_total` and `sbw_api_answer_too_large_total`.
    pub route: &'static str,
    pub bytes: usize,
}

impl Ceiling {
    /// A 202 is about 300 bytes and an error names one row: 1 MiB leaves room for any message.
    pub const BATCH: Ceiling = Ceiling {
        route: "batch",
        bytes: 1 << 20,
    };
    /// A report of 10,000 invalid rows (the most a batch holds) is about 2 MB: 16 MiB is 8 times
    /// that.
    pub const JOB: Ceiling = Ceiling {
        route: "job",
        bytes: 16 << 20,
    };
    /// A schema of tens of thousands of fields.
    pub const METADATA: Ceiling = Ceiling {
        route: "metadata",
        bytes: 4 << 20,
    };

    fn too_large(self) -> ApiError {
        ApiError::TooLarge {
            route: self.route,
            ceiling: self.bytes,
        }
    }
}

/// A body gathered chunk by chunk, refused as soon as it would pass the ceiling.
#[derive(Debug)]
pub struct Capped {
    body: BytesMut,
    ceiling: Ceiling,
}

impl Capped {
    /// `announced` is the `Content-Length`, when there is one: over the ceiling, nothing is read.
    pub fn new(ceiling: Ceiling, announced: Option<u64>) -> Result<Self, ApiError> {
        if announced.is_some_and(|length| length > ceiling.bytes as u64) {
            return Err(ceiling.too_large());
        }
        let capacity = announced.map_or(8 * 1024, |length| length as usize);
        Ok(Self {
            body: BytesMut::with_capacity(capacity.min(ceiling.bytes)),
            ceiling,
        })
    }

    pub fn push(&mut self, chunk: &[u8]) -> Result<(), ApiError> {
        if chunk.len() > self.ceiling.bytes - self.body.len() {
            return Err(self.ceiling.too_large());
        }
        self.body.extend_from_slice(chunk);
        Ok(())
    }

    pub fn finish(self) -> Bytes {
        self.body.freeze()
    }
}

/// Reads `response`'s body within `ceiling`. The request timeout still bounds the whole read, so
/// a body that drips ends as a timeout.
pub async fn read_capped(
    mut response: reqwest::Response,
    ceiling: Ceiling,
) -> Result<Bytes, ApiError> {
    let mut body = Capped::new(ceiling, response.content_length())?;
    while let Some(chunk) = response.chunk().await.map_err(super::error::transport)? {
        body.push(&chunk)?;
    }
    Ok(body.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINY: Ceiling = Ceiling {
        route: "test",
        bytes: 10,
    };

    #[test]
    fn a_body_is_refused_at_its_ceiling_and_not_before() {
        let mut body = Capped::new(TINY, None).unwrap();
        body.push(b"12345").unwrap();
        body.push(b"67890").unwrap();
        assert!(matches!(
            body.push(b"x"),
            Err(ApiError::TooLarge {
                route: "test",
                ceiling: 10
            })
        ));
        assert_eq!(&Capped::new(TINY, Some(10)).unwrap().finish()[..], b"");
        assert!(
            Capped::new(TINY, Some(11)).is_err(),
            "announced over the ceiling"
        );
        let mut body = Capped::new(TINY, Some(2)).unwrap();
        assert!(body.push(&[0; 11]).is_err(), "one chunk over the ceiling");
    }
}
