//! The token stays with its origin: a job's `statusPath` is polled only on the scheme, host and
//! port of `--api-url`. A `statusPath` that names another origin (an absolute URL from the API, a
//! proxy or a man in the middle, or an https base turned http) is not followed: the job is polled
//! on the contract's documented route, `{base}/records/{object}/jobs/{jobId}`, on the base's own
//! origin. That keeps the job's rows flowing without ever sending the token elsewhere; a
//! Malformed answer instead would stall every batch behind a hostile answer until
//! `--job-timeout`, and the rows of accepted jobs would go to the DLQ for nothing.

use reqwest::Url;

/// Scheme, host and port (the scheme's default port when none is written).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl Origin {
    /// The origin of an absolute http(s) URL.
    pub fn of(url: &str) -> Option<Self> {
        Self::of_url(&Url::parse(url).ok()?)
    }

    fn of_url(url: &Url) -> Option<Self> {
        if !matches!(url.scheme(), "http" | "https") {
            return None;
        }
        Some(Self {
            scheme: url.scheme().to_owned(),
            host: url.host_str()?.to_ascii_lowercase(),
            port: url.port_or_known_default(),
        })
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host)?;
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => Ok(()),
        }
    }
}

/// Where a job is polled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobRoute {
    /// `statusPath`, joined to the base, on the base's origin and under its path.
    Named(String),
    /// `statusPath` named another origin (`named_origin`, or why it is not the base's); `url` is
    /// the documented job route on the base.
    Foreign { named_origin: String, url: String },
    /// `statusPath` named another origin, and the jobId (`.` or `..`) cannot name a path segment.
    Unusable { named_origin: String },
}

impl JobRoute {
    /// `statusPath` is relative to the base, with or without its leading slash; an absolute URL
    /// is taken only on the base's origin, under the base's path (a gateway may route other
    /// paths of one host to other services), and without credentials of its own.
    pub fn resolve(
        origin: &Origin,
        base: &str,
        object: &str,
        job_id: &str,
        status_path: &str,
    ) -> Self {
        let named = match Url::parse(status_path) {
            Ok(absolute) => absolute,
            Err(_) => match Url::parse(&format!(
                "{}/{}",
                base.trim_end_matches('/'),
                status_path.trim_start_matches('/')
            )) {
                Ok(joined) => joined,
                Err(_) => return Self::documented(base, object, job_id, "unreadable".into()),
            },
        };
        match Origin::of_url(&named) {
            Some(named_origin) if named_origin == *origin => {
                if !named.username().is_empty() || named.password().is_some() {
                    let why = format!("{named_origin} with credentials of its own");
                    Self::documented(base, object, job_id, why)
                } else if !under(base, &named) {
                    let why = format!("{named_origin} outside the base path");
                    Self::documented(base, object, job_id, why)
                } else {
                    JobRoute::Named(named.into())
                }
            }
            Some(other) => Self::documented(base, object, job_id, other.to_string()),
            None => Self::documented(base, object, job_id, named.scheme().to_owned() + ":"),
        }
    }

    fn documented(base: &str, object: &str, job_id: &str, named_origin: String) -> Self {
        if job_id == "." || job_id == ".." {
            return JobRoute::Unusable { named_origin };
        }
        let url = match Url::parse(base) {
            Ok(mut url) => {
                if let Ok(mut segments) = url.path_segments_mut() {
                    segments
                        .pop_if_empty()
                        // `extend` percent-encodes `/`, `?`, `#` and `%` in each segment.
                        .extend(["records", object, "jobs", job_id]);
                }
                url.into()
            }
            // The base was checked at start-up; this keeps the type total.
            Err(_) => format!("{base}/records/{object}/jobs/{job_id}"),
        };
        JobRoute::Foreign { named_origin, url }
    }

    /// The URL to poll; `None` when there is none on the base.
    pub fn url(&self) -> Option<&str> {
        match self {
            JobRoute::Named(url) | JobRoute::Foreign { url, .. } => Some(url),
            JobRoute::Unusable { .. } => None,
        }
    }
}

/// Whether `named`'s path is the base's path or below it.
pub fn under(base: &str, named: &Url) -> bool {
    let Ok(base) = Url::parse(base) else {
        return false;
    };
    let prefix = base.path().trim_end_matches('/');
    let path = named.path();
    prefix.is_empty() || path == prefix || path.starts_with(&format!("{prefix}/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "https://api.example.com/public/v1";

    fn resolve(status_path: &str) -> JobRoute {
        let origin = Origin::of(BASE).unwrap();
        JobRoute::resolve(&origin, BASE, "people", "rjob_1", status_path)
    }

    /// `statusPath` joins the base with or without its leading slash.
    #[test]
    fn relative_status_paths_join_the_base() {
        let want = JobRoute::Named(format!("{BASE}/records/people/jobs/rjob_1"));
        assert_eq!(resolve("/records/people/jobs/rjob_1"), want);
        assert_eq!(resolve("records/people/jobs/rjob_1"), want);
        let origin = Origin::of(BASE).unwrap();
        let slash = JobRoute::resolve(
            &origin,
            &format!("{BASE}/"),
            "people",
            "rjob_1",
            "records/people/jobs/rjob_1",
        );
        assert_eq!(slash, want);
        assert_eq!(
            resolve("https://API.example.com:443/public/v1/x"),
            JobRoute::Named(format!("{BASE}/x")),
            "the same origin, spelled differently"
        );
    }

    /// On 8f017ce an absolute `statusPath` was taken as it was, token and all.
    #[test]
    fn a_status_path_on_another_origin_is_polled_on_the_base() {
        let documented = format!("{BASE}/records/people/jobs/rjob_1");
        for (status_path, named) in [
            ("https://evil.example.net/x", "https://evil.example.net:443"),
            (
                "http://api.example.com/public/v1/records/people/jobs/rjob_1",
                "http://api.example.com:80",
            ),
            (
                "https://api.example.com:8443/x",
                "https://api.example.com:8443",
            ),
            ("ftp://api.example.com/x", "ftp:"),
            ("file:///etc/passwd", "file:"),
        ] {
            assert_eq!(
                resolve(status_path),
                JobRoute::Foreign {
                    named_origin: named.into(),
                    url: documented.clone()
                },
                "{status_path}"
            );
        }
        for tricky in ["@evil.example.net/x", "//evil.example.net/x", "\\\\evil/x"] {
            let route = resolve(tricky);
            let origin = Origin::of(route.url().unwrap()).unwrap();
            assert_eq!(origin, Origin::of(BASE).unwrap(), "{tricky}: {route:?}");
        }
    }

    #[test]
    fn a_job_id_is_one_path_segment() {
        let origin = Origin::of(BASE).unwrap();
        let route =
            |job_id: &str| JobRoute::resolve(&origin, BASE, "people", job_id, "http://evil/");
        let jobs = format!("{BASE}/records/people/jobs");
        for (job_id, segment) in [
            ("rjob_1", "rjob_1"),
            ("../../admin?x=1#y", "..%2F..%2Fadmin%3Fx=1%23y"),
            ("%2e%2e", "%252e%252e"),
            ("a b/é", "a%20b%2F%C3%A9"),
        ] {
            assert_eq!(
                route(job_id).url(),
                Some(format!("{jobs}/{segment}").as_str())
            );
        }
        for dots in [".", ".."] {
            assert!(matches!(route(dots), JobRoute::Unusable { .. }), "{dots}");
        }
    }

    /// The review of issue 20: a path-routed gateway serves other services on the same origin,
    /// and credentials in the URL would become a second `Authorization` header.
    #[test]
    fn a_status_path_stays_under_the_base_path_without_credentials() {
        let documented = format!("{BASE}/records/people/jobs/rjob_1");
        for status_path in [
            "https://api.example.com/other-service/collect",
            "../../../other-service/collect",
            "https://api.example.com/public/v10/x",
            "https://user:pass@api.example.com/public/v1/records/people/jobs/rjob_1",
        ] {
            let route = resolve(status_path);
            assert_eq!(
                route.url(),
                Some(documented.as_str()),
                "{status_path}: {route:?}"
            );
        }
        assert_eq!(
            resolve("https://api.example.com/public/v1/records/people/jobs/rjob_9"),
            JobRoute::Named(format!("{BASE}/records/people/jobs/rjob_9"))
        );
    }
}
