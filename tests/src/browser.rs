//! Headless Chromium as a peer: Debian's `chromium` driven through its `chromedriver`
//! (WebDriver) with fantoccini, behind a small blocking API for tests.
//!
//! ```no_run
//! use hpccert_e2e::browser::{Browser, browser_available};
//! if browser_available() {
//!     let b = Browser::start();
//!     b.goto("http://127.0.0.1:8080/");
//!     b.wait_for("form#login");
//!     b.fill("input[name=login]", "alice");
//!     b.submit_form("form#login");
//!     b.wait_for_url_prefix("http://127.0.0.1:8080/home");
//!     b.screenshot("home"); // target/test-artifacts/<test>/01-home.png
//! }
//! ```
//!
//! Every [`Browser`] has its own chromedriver (on a free loopback port) and so its own Chromium
//! with a fresh profile in a temporary directory: no cookies or storage are shared between
//! browsers. Chromium reaches loopback only: everything else goes to a proxy at
//! `127.0.0.1:1`, where nothing listens (loopback addresses and `localhost` always bypass a
//! proxy), so a page that pulls in an outside resource (the provider's login pages `@import`
//! a web font) fails at once instead of waiting for the network, no name is looked up, and
//! nothing leaves the machine.
//!
//! Each call blocks until the WebDriver command is done; a failure panics with what failed
//! and the page's URL (test support: a failure is a failed test). `goto`, `click` and
//! `submit_form` return once the browser has loaded the next page (WebDriver's "normal" page
//! load strategy), but a page that changes itself by script needs [`Browser::wait_for`] or
//! [`Browser::wait_for_url_prefix`], which poll until a deadline ([`WAIT`]).

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fantoccini::error::CmdError;
use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder, Locator};

use super::{OrFail, free_port, skip};

/// The proxy for everything but loopback: nothing listens there.
pub const NO_PROXY: &str = "http://127.0.0.1:1";
/// Debian's Chromium (package `chromium`).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's chromedriver (package `chromium-driver`).
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long the `wait_for*` methods wait.
pub const WAIT: Duration = Duration::from_secs(10);
/// How often they look.
const POLL: Duration = Duration::from_millis(50);
/// The window size of a new browser (a laptop screen).
pub const WINDOW: (u32, u32) = (1280, 900);
/// A phone's viewport (for [`Browser::set_viewport_size`]).
pub const PHONE: (u32, u32) = (390, 844);

/// Chromium's arguments: headless, as root in a container (no sandbox, small /dev/shm), and
/// quiet (no background requests, updates, sync or first-run pages).
const CHROMIUM_ARGS: [&str; 8] = [
    "--headless=new",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,900",
];

/// Chromium and chromedriver, or a printed skip (a failure when peers are required).
pub fn browser_available() -> bool {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !Path::new(p).is_file())
        .collect();
    if missing.is_empty() {
        return true;
    }
    skip(&format!(
        "{} not found (Debian packages chromium chromium-driver)",
        missing.join(" and ")
    ));
    false
}

/// A cookie as the browser holds it (for the page's host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cookie {
    pub name: String,
    pub value: String,
    pub path: Option<String>,
    pub domain: Option<String>,
    pub http_only: bool,
    pub secure: bool,
    /// `Strict`, `Lax` or `None` when the cookie sets it.
    pub same_site: Option<String>,
}

/// A headless Chromium with its own chromedriver; both end on drop (the WebDriver session is
/// closed first, which quits Chromium, then chromedriver's process group is killed).
pub struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    driver_log: PathBuf,
    /// where [`Browser::screenshot`] saves
    artifacts: PathBuf,
    /// Chromium's profile and chromedriver's log
    dir: tempfile::TempDir,
}

impl fmt::Debug for Browser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Browser")
            .field("chromedriver", &self.driver.id())
            .field("artifacts", &self.artifacts)
            .finish_non_exhaustive()
    }
}

impl Browser {
    /// Start chromedriver on a free loopback port, wait until it answers, and open a session
    /// (a new headless Chromium, window 1280x900). Screenshots go to
    /// `target/test-artifacts/<test name>/`.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("hpccert-browser-")
            .tempdir()
            .or_fail("a temporary directory for the browser");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .or_fail("a tokio runtime for the browser");
        let (driver, port, driver_log) = start_driver(dir.path());
        let mut browser = Self {
            runtime,
            client: None,
            driver,
            driver_log,
            artifacts: artifacts_dir(),
            dir,
        };
        let profile = browser.dir.path().join("profile");
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.push(format!("--proxy-server={NO_PROXY}"));
        let caps = serde_json::json!({
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
        });
        let caps: Capabilities = serde_json::from_value(caps).or_fail("capabilities");
        let mut builder =
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        builder.capabilities(caps);
        let url = format!("http://127.0.0.1:{port}");
        match browser.runtime.block_on(builder.connect(&url)) {
            Ok(client) => browser.client = Some(client),
            Err(e) => panic!(
                "browser: no WebDriver session at {url}: {e}\nchromedriver's log:\n{}",
                browser.driver_log_text()
            ),
        }
        browser
    }

    /// What chromedriver wrote (for failure messages).
    pub fn driver_log_text(&self) -> String {
        std::fs::read_to_string(&self.driver_log).unwrap_or_default()
    }

    /// The directory screenshots go to.
    pub fn artifacts_dir(&self) -> &Path {
        &self.artifacts
    }

    /// Run anything else fantoccini can do, blocking: `b.with_client(|c| c.title())`.
    pub fn with_client<'a, F, Fut>(&'a self, f: F) -> Fut::Output
    where
        F: FnOnce(&'a Client) -> Fut,
        Fut: Future,
    {
        self.runtime.block_on(f(self.client()))
    }

    fn client(&self) -> &Client {
        self.client
            .as_ref()
            .or_fail("browser: the WebDriver session")
    }

    fn block<T>(
        &self,
        what: impl FnOnce() -> String,
        fut: impl Future<Output = Result<T, CmdError>>,
    ) -> T {
        match self.runtime.block_on(fut) {
            Ok(v) => v,
            Err(e) => self.fail(&what(), &e),
        }
    }

    fn fail(&self, what: &str, err: &dyn fmt::Display) -> ! {
        let url = self
            .runtime
            .block_on(self.client().current_url())
            .map_or_else(|e| format!("(unknown: {e})"), |u| u.to_string());
        panic!("browser: {what}: {err}\n(at {url})");
    }

    /// Load `url` (returns once the page has loaded).
    pub fn goto(&self, url: &str) {
        self.block(|| format!("goto {url}"), self.client().goto(url));
    }

    /// The URL of the page now shown.
    pub fn current_url(&self) -> String {
        self.block(|| "current URL".into(), self.client().current_url())
            .to_string()
    }

    /// The page's title.
    pub fn title(&self) -> String {
        self.block(|| "title".into(), self.client().title())
    }

    /// The page's HTML as the browser has it now (after scripts ran).
    pub fn source(&self) -> String {
        self.block(|| "page source".into(), self.client().source())
    }

    fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.block(
            || format!("no element {css:?}"),
            self.client().find(Locator::Css(css)),
        )
    }

    /// The rendered text of the first element matching `css` (as a person sees it).
    pub fn text(&self, css: &str) -> String {
        let element = self.find(css);
        self.block(|| format!("text of {css:?}"), element.text())
    }

    /// The rendered texts of all elements matching `css` (none: empty).
    pub fn find_all_text(&self, css: &str) -> Vec<String> {
        let elements = self.block(
            || format!("elements {css:?}"),
            self.client().find_all(Locator::Css(css)),
        );
        elements
            .iter()
            .map(|e| self.block(|| format!("text of {css:?}"), e.text()))
            .collect()
    }

    /// Whether an element matches `css` now (no waiting).
    pub fn is_present(&self, css: &str) -> bool {
        !self
            .block(
                || format!("elements {css:?}"),
                self.client().find_all(Locator::Css(css)),
            )
            .is_empty()
    }

    /// The value of attribute `name` of the first element matching `css`.
    pub fn attr(&self, css: &str, name: &str) -> Option<String> {
        let element = self.find(css);
        self.block(
            || format!("attribute {name} of {css:?}"),
            element.attr(name),
        )
    }

    /// Replace the value of the input matching `css` by typing `value`.
    pub fn fill(&self, css: &str, value: &str) {
        let element = self.find(css);
        self.block(|| format!("clearing {css:?}"), element.clear());
        self.block(|| format!("typing into {css:?}"), element.send_keys(value));
    }

    /// Click the element matching `css` (a link or button: returns once the next page loaded).
    pub fn click(&self, css: &str) {
        let element = self.find(css);
        self.block(|| format!("clicking {css:?}"), element.click());
    }

    /// Submit the form matching `css` with its first submit button, as a person would.
    pub fn submit_form(&self, css: &str) {
        let form = self.block(
            || format!("no form {css:?}"),
            self.client().form(Locator::Css(css)),
        );
        self.block(|| format!("submitting {css:?}"), form.submit());
    }

    /// Wait until an element matches `css` (at most [`WAIT`]); panics with the page's URL and
    /// an excerpt of its HTML when none does.
    pub fn wait_for(&self, css: &str) {
        let waited = self.runtime.block_on(
            self.client()
                .wait()
                .at_most(WAIT)
                .every(POLL)
                .for_element(Locator::Css(css)),
        );
        match waited {
            Ok(_) => {}
            Err(CmdError::WaitTimeout) => panic!(
                "browser: no element {css:?} after {WAIT:?}\n(at {})\n{}",
                self.current_url(),
                self.body_excerpt()
            ),
            Err(e) => self.fail(&format!("waiting for {css:?}"), &e),
        }
    }

    /// Wait until the URL starts with `prefix` (at most [`WAIT`]) and return it.
    pub fn wait_for_url_prefix(&self, prefix: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let url = self.current_url();
            if url.starts_with(prefix) {
                return url;
            }
            if Instant::now() >= deadline {
                panic!(
                    "browser: the URL does not start with {prefix:?} after {WAIT:?}\n(at {url})\n{}",
                    self.body_excerpt()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// The page's HTML from `<body` on, cut to about 2000 bytes (for failure messages).
    pub fn body_excerpt(&self) -> String {
        let html = match self.runtime.block_on(self.client().source()) {
            Ok(html) => html,
            Err(e) => return format!("(no page source: {e})"),
        };
        let body = html.find("<body").map_or(html.as_str(), |i| &html[i..]);
        let mut end = body.len().min(2000);
        while !body.is_char_boundary(end) {
            end -= 1;
        }
        let cut = if end < body.len() { "\n[...]" } else { "" };
        format!("{}{cut}", &body[..end])
    }

    /// Save a PNG of the viewport as `target/test-artifacts/<test>/<NN>-<name>.png` (NN counts
    /// the screenshots of the test) and return its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.block(|| format!("screenshot {name}"), self.client().screenshot());
        let path = next_artifact(&self.artifacts, name, "png");
        std::fs::write(&path, png).or_fail(&format!("writing {}", path.display()));
        eprintln!("screenshot: {}", path.display());
        path
    }

    /// Resize the window (its outer size: the viewport is smaller by the browser's frame,
    /// about 130 pixels in height in headless Chromium).
    pub fn set_window_size(&self, width: u32, height: u32) {
        self.block(
            || format!("window size {width}x{height}"),
            self.client().set_window_size(width, height),
        );
    }

    /// Resize the window so that the page's viewport (and so a screenshot) is `width` x
    /// `height` CSS pixels, e.g. [`PHONE`].
    pub fn set_viewport_size(&self, width: u32, height: u32) {
        // the frame's size is not reported reliably (outerWidth is at least 500 in headless
        // Chromium, whatever the window), so measure what the viewport became and add the
        // difference
        self.set_window_size(width, height);
        let (w, h) = self.viewport_size();
        let grow = |want: u32, got: u64| {
            let got = u32::try_from(got).unwrap_or(u32::MAX);
            want.saturating_add(want.saturating_sub(got))
        };
        self.set_window_size(grow(width, w), grow(height, h));
        let now = self.viewport_size();
        assert_eq!(
            now,
            (u64::from(width), u64::from(height)),
            "browser: the viewport after resizing the window"
        );
    }

    /// The page's viewport in CSS pixels: (width, height).
    pub fn viewport_size(&self) -> (u64, u64) {
        let size = self.execute("return [window.innerWidth, window.innerHeight];");
        match (size[0].as_u64(), size[1].as_u64()) {
            (Some(w), Some(h)) => (w, h),
            _ => panic!("browser: the viewport size: {size}"),
        }
    }

    /// The cookies the browser holds for the page's host.
    pub fn cookies(&self) -> Vec<Cookie> {
        let cookies = self.block(|| "cookies".into(), self.client().get_all_cookies());
        cookies
            .iter()
            .map(|c| Cookie {
                name: c.name().to_string(),
                value: c.value().to_string(),
                path: c.path().map(str::to_string),
                domain: c.domain().map(str::to_string),
                http_only: c.http_only().unwrap_or(false),
                secure: c.secure().unwrap_or(false),
                same_site: c.same_site().map(|s| s.to_string()),
            })
            .collect()
    }

    /// Forget the cookies of the page's host (log out everywhere on it).
    pub fn delete_all_cookies(&self) {
        self.block(
            || "deleting cookies".into(),
            self.client().delete_all_cookies(),
        );
    }

    /// Run JavaScript in the page (`return ...;` gives a value).
    pub fn execute(&self, js: &str) -> serde_json::Value {
        self.block(
            || format!("script {js:?}"),
            self.client().execute(js, vec![]),
        )
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // quits Chromium; bounded, since a hung browser must not hang the test
            let _ = self.runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), client.close()).await
            });
        }
        // chromedriver and anything it left behind: its own process group
        if let Ok(pid) = i32::try_from(self.driver.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// chromedriver on a free loopback port in its own process group, answering: (child, port,
/// log). Retries when the port was taken in the meantime.
fn start_driver(dir: &Path) -> (Child, u16, PathBuf) {
    use std::os::unix::process::CommandExt;
    for attempt in 0..10 {
        let port = free_port();
        let log = dir.join(format!("chromedriver-{port}.log"));
        let out = std::fs::File::create(&log).or_fail("chromedriver's log");
        let err = out.try_clone().or_fail("chromedriver's log");
        let mut child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .or_fail("starting chromedriver");
        let status = format!("http://127.0.0.1:{port}/status");
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .or_fail("HTTP client");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(exit) = child.try_wait().or_fail("chromedriver") {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if attempt < 9 && text.contains("not available") {
                    break; // the port was taken: another one
                }
                panic!("chromedriver exited ({exit}) before it answered:\n{text}");
            }
            let ready = http
                .get(&status)
                .send()
                .ok()
                .and_then(|r| r.bytes().ok())
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                return (child, port, log);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "chromedriver not ready after 20 s:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(POLL);
        }
    }
    panic!("chromedriver found no free port in 10 attempts")
}

/// The name of the running test: libtest names each test's thread after it (`module::test`
/// becomes `module-test`); on the main thread (`--test-threads=1` on some Rust versions) the
/// test binary's name.
pub fn test_name() -> String {
    let thread = std::thread::current();
    match thread.name() {
        Some(name) if name != "main" => name.replace("::", "-"),
        _ => std::env::current_exe()
            .ok()
            .and_then(|exe| exe.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .map(|stem| match stem.rsplit_once('-') {
                // cargo's test binaries are NAME-HASH
                Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => {
                    name.to_string()
                }
                _ => stem,
            })
            .unwrap_or_else(|| "test".to_string()),
    }
}

/// cargo's target directory (the one this test binary was built in, so CARGO_TARGET_DIR is
/// honoured): the binary is `<target>/<profile>/deps/NAME-HASH`.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().ok();
    let from_exe = exe.as_deref().and_then(|exe| {
        let deps = exe.parent()?;
        (deps.file_name()? == "deps").then_some(())?;
        Some(deps.parent()?.parent()?.to_path_buf())
    });
    from_exe
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// `target/test-artifacts/<test name>`.
pub fn artifacts_dir() -> PathBuf {
    let name: String = test_name()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    target_dir().join("test-artifacts").join(name)
}

/// The numbers handed out per artifacts directory in this process.
static COUNTERS: Mutex<BTreeMap<PathBuf, u32>> = Mutex::new(BTreeMap::new());

/// `<dir>/<NN>-<name>.<ext>` with the next NN of `dir` (counting from 01 in each test run;
/// the files of an earlier run are removed when the first one is handed out).
fn next_artifact(dir: &Path, name: &str, ext: &str) -> PathBuf {
    let mut counters = COUNTERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let n = counters.entry(dir.to_path_buf()).or_insert(0);
    if *n == 0 {
        let _ = std::fs::remove_dir_all(dir);
    }
    std::fs::create_dir_all(dir).or_fail(&format!("creating {}", dir.display()));
    *n += 1;
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    dir.join(format!("{:02}-{name}.{ext}", *n))
}
