//! A real headless Chromium for the web console's tests, driven over WebDriver (fantoccini).
//!
//! Each [`Browser`] starts its own `chromedriver` (Debian's `chromium-driver`, installed by `scripts/test`)
//! on a claimed free port, in a process group of its own, with a Chromium profile in its own temporary
//! directory: browser tests run in parallel without sharing anything (`.config/nextest.toml` runs at most
//! two at once). [`Browser::close`] ends the WebDriver session, which quits Chromium; dropping a `Browser`
//! (a failed test unwinding) kills chromedriver's whole process group, Chromium included.
//!
//! Pages are reached by label and visible text, as a person finds them ([`Browser::fill`],
//! [`Browser::click_button`], [`Browser::wait_for_text`]). Every wait polls what the page shows, up to
//! [`WAIT`], and its failure says what the page showed instead. Screenshots are full-page PNGs, written
//! under `docs/console/` when `EDICT_CONSOLE_SCREENSHOTS=1` (to refresh the documentation's pictures),
//! otherwise into the browser's temporary directory.

use crate::harness::free_port;
use base64::Engine as _;
use fantoccini::actions::{InputSource as _, KeyAction, KeyActions};
use fantoccini::elements::Element;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's chromedriver (package `chromium-driver`).
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Debian's Chromium (package `chromium`).
const CHROMIUM: &str = "/usr/bin/chromium";
/// How long a wait for the page polls before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);
/// How often a wait asks the browser again.
const POLL: Duration = Duration::from_millis(100);
/// The window height every width is tried at (the viewport is about 140 px shorter).
const WINDOW_HEIGHT: u32 = 800;

/// A headless Chromium on its own chromedriver, opened on one Edict server.
pub struct Browser {
    base: String,
    client: Option<Client>,
    driver: Child,
    dir: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a Chromium session (1280 px wide) for the server at `base`
    /// (`http://127.0.0.1:<port>`, a [`crate::harness::TestApp`]'s `base`).
    pub async fn open(base: &str) -> Browser {
        assert!(
            Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists(),
            "{CHROMEDRIVER} or {CHROMIUM} is missing: install Debian's chromium and chromium-driver \
             packages (scripts/test does)"
        );
        let dir = tempfile::Builder::new()
            .prefix("edict-browser-")
            .tempdir()
            .expect("a temporary directory for the browser");
        // A port taken between claiming and binding makes chromedriver exit: try other ports.
        for _ in 0..3 {
            let port = free_port();
            let mut driver = Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                // Its own process group, so that one signal ends chromedriver and every Chromium process.
                .process_group(0)
                .spawn()
                .unwrap_or_else(|error| panic!("start {CHROMEDRIVER}: {error}"));
            if driver_ready(port, &mut driver).await {
                let client = session(port, &dir.path().join("profile")).await;
                return Browser {
                    base: base.trim_end_matches('/').to_owned(),
                    client: Some(client),
                    driver,
                    dir,
                };
            }
            kill_group(&mut driver);
        }
        panic!("chromedriver did not start (three ports tried)");
    }

    /// The WebDriver client, for what the helpers here do not cover.
    pub fn client(&self) -> &Client {
        self.client
            .as_ref()
            .expect("the session is open until close")
    }

    /// Opens `path` (`/device`, `/console/rules?page=2`) of the server, and waits until it has loaded.
    pub async fn goto(&self, path: &str) {
        let url = format!("{}{path}", self.base);
        self.client()
            .goto(&url)
            .await
            .unwrap_or_else(|error| panic!("open {url} in Chromium: {error}"));
    }

    /// The path (and query) of the page shown now.
    pub async fn path(&self) -> String {
        let url = self.client().current_url().await.expect("the current URL");
        match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// The text the page shows (`innerText` of its body: hidden elements are left out).
    pub async fn page_text(&self) -> String {
        let text = self
            .client()
            .execute(
                "return document.body ? document.body.innerText : '';",
                vec![],
            )
            .await
            .expect("read the page's text");
        text.as_str().unwrap_or_default().to_owned()
    }

    /// Waits until the page shows `text`.
    pub async fn wait_for_text(&self, text: &str) {
        let shown = self
            .poll(|| async { self.page_text().await.contains(text).then_some(()) })
            .await;
        if shown.is_none() {
            self.fail(&format!("{text:?} does not show")).await;
        }
    }

    /// Waits until an element matches the CSS selector `css`; answers the first one.
    pub async fn wait_for(&self, css: &str) -> Element {
        match self.poll(|| self.first(Locator::Css(css))).await {
            Some(element) => element,
            None => self.fail(&format!("no element matches `{css}`")).await,
        }
    }

    /// The text of the first element matching `css` (waiting for it).
    pub async fn text(&self, css: &str) -> String {
        let element = self.wait_for(css).await;
        element.text().await.expect("an element's text")
    }

    /// Waits for the form control named by `label_or_css`: the input, select or text area of the
    /// `<label>` whose text is exactly that (around the control, or pointing at it with `for`), or of
    /// that `aria-label`; else the element matching it as a CSS selector.
    pub async fn field(&self, label_or_css: &str) -> Element {
        let text = xpath_literal(label_or_css);
        let by_label = format!(
            "//label[normalize-space()={text}]//*[self::input or self::select or self::textarea]\
             | //*[@id=//label[normalize-space()={text}]/@for]\
             | //*[(self::input or self::select or self::textarea) and @aria-label={text}]"
        );
        let found = self
            .poll(|| async {
                match self.first(Locator::XPath(&by_label)).await {
                    Some(element) => Some(element),
                    None => self.first(Locator::Css(label_or_css)).await,
                }
            })
            .await;
        match found {
            Some(element) => element,
            None => {
                self.fail(&format!(
                    "no field is labelled {label_or_css:?} or matches it as CSS"
                ))
                .await
            }
        }
    }

    /// Types `value` into the field named by `label_or_css` (see [`Browser::field`]), replacing what it held.
    pub async fn fill(&self, label_or_css: &str, value: &str) {
        let field = self.field(label_or_css).await;
        field.clear().await.expect("clear a field");
        field.send_keys(value).await.expect("type into a field");
    }

    /// Picks the option whose value is `value` in the select named by `label_or_css` (see
    /// [`Browser::field`]).
    pub async fn select(&self, label_or_css: &str, value: &str) {
        let field = self.field(label_or_css).await;
        if let Err(error) = field.select_by_value(value).await {
            self.fail(&format!(
                "{label_or_css:?} offers no option {value:?}: {error}"
            ))
            .await
        }
    }

    /// Types `keys` on the keyboard, wherever the focus is: each character (or [`fantoccini::key::Key`],
    /// as text) pressed and released in turn, as a person would.
    pub async fn press(&self, keys: &str) {
        let mut actions = KeyActions::new("keyboard".to_owned());
        for key in keys.chars() {
            actions = actions
                .then(KeyAction::Down { value: key })
                .then(KeyAction::Up { value: key });
        }
        self.client()
            .perform_actions(actions)
            .await
            .expect("press keys");
    }

    /// What has the keyboard's focus: its tag, its accessible text (the label of a control, the text of
    /// a link or button), and whether it is drawn with a visible focus indicator (an outline of some
    /// width that is not `none`).
    pub async fn focused(&self) -> Focused {
        let script = "const e = document.activeElement; const s = getComputedStyle(e);\
            const label = e.labels && e.labels.length ? e.labels[0].innerText : '';\
            return [e.tagName.toLowerCase(), (label || e.getAttribute('aria-label') || e.innerText || '').trim(),\
            s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0];";
        let found = self
            .client()
            .execute(script, vec![])
            .await
            .expect("read the focused element");
        Focused {
            tag: found[0].as_str().unwrap_or_default().to_owned(),
            text: found[1].as_str().unwrap_or_default().to_owned(),
            outlined: found[2].as_bool().unwrap_or(false),
        }
    }

    /// Waits until a button reading `text` (a `<button>`, or an `<input>` button with that value) is shown
    /// and enabled, then clicks it.
    pub async fn click_button(&self, text: &str) {
        let text_literal = xpath_literal(text);
        let button = format!(
            "//button[normalize-space()={text_literal}]\
             | //input[(@type='submit' or @type='button') and @value={text_literal}]"
        );
        let found = self
            .poll(|| async {
                let element = self.first(Locator::XPath(&button)).await?;
                let usable =
                    element.is_displayed().await.ok()? && element.is_enabled().await.ok()?;
                usable.then_some(element)
            })
            .await;
        match found {
            Some(element) => element.click().await.expect("click a button"),
            None => {
                self.fail(&format!("no enabled button reads {text:?}"))
                    .await
            }
        }
    }

    /// Makes the viewport `px` wide (the window is resized; Chromium's window is never narrower than
    /// 500 px, but its viewport follows down to about 200).
    pub async fn set_width(&self, px: u32) {
        self.client()
            .set_window_size(px, WINDOW_HEIGHT)
            .await
            .expect("resize the window");
        let width = self
            .client()
            .execute("return window.innerWidth;", vec![])
            .await
            .expect("read the viewport's width");
        assert_eq!(
            width.as_u64(),
            Some(u64::from(px)),
            "the viewport is {width} px wide, not {px}"
        );
    }

    /// Saves a PNG of the whole page (as wide as the viewport, as long as the page) as `<name>.png`, under
    /// `docs/console/` when `EDICT_CONSOLE_SCREENSHOTS=1`, otherwise in this browser's temporary directory;
    /// answers its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let metrics = self.devtools("Page.getLayoutMetrics", json!({})).await;
        let width = metrics["cssLayoutViewport"]["clientWidth"].as_f64();
        let height = metrics["cssContentSize"]["height"].as_f64();
        let (Some(width), Some(height)) = (width, height) else {
            panic!("Chromium's layout metrics lack the page's size: {metrics}");
        };
        let shot = self
            .devtools(
                "Page.captureScreenshot",
                json!({
                    "format": "png",
                    "captureBeyondViewport": true,
                    "clip": {"x": 0, "y": 0, "width": width, "height": height.ceil(), "scale": 1},
                }),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or_default())
            .expect("Chromium's screenshot is base64");
        let dir = if std::env::var("EDICT_CONSOLE_SCREENSHOTS").as_deref() == Ok("1") {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/console"))
        } else {
            self.dir.path().join("screenshots")
        };
        std::fs::create_dir_all(&dir).expect("a directory for screenshots");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png)
            .unwrap_or_else(|error| panic!("write {}: {error}", path.display()));
        path
    }

    /// The errors Chromium's console logged since the last call: failed loads, script errors, blocked
    /// content (a Content Security Policy violation is one), `console.error`. A missing `/favicon.ico`,
    /// which browsers ask for by themselves, is not counted.
    pub async fn console_errors(&self) -> Vec<String> {
        let entries = self
            .client()
            .issue_cmd(ChromeCommand {
                path: "se/log",
                body: json!({"type": "browser"}),
            })
            .await
            .expect("read Chromium's console log");
        entries
            .as_array()
            .into_iter()
            .flatten()
            .filter(|entry| entry["level"] == "SEVERE")
            .filter_map(|entry| entry["message"].as_str())
            .filter(|message| !message.contains("/favicon.ico "))
            .map(str::to_owned)
            .collect()
    }

    /// Fails the test when the page logged an error (see [`Browser::console_errors`]).
    pub async fn assert_clean_console(&self) {
        let errors = self.console_errors().await;
        assert!(
            errors.is_empty(),
            "{} logged errors in Chromium's console:\n{}",
            self.path().await,
            errors.join("\n")
        );
    }

    /// Ends the session (Chromium quits) and stops chromedriver.
    pub async fn close(mut self) {
        if let Some(client) = self.client.take() {
            client.close().await.expect("end the WebDriver session");
        }
        // Drop stops chromedriver.
    }

    /// The first element `locator` finds now, if any.
    async fn first(&self, locator: Locator<'_>) -> Option<Element> {
        self.client()
            .find_all(locator)
            .await
            .ok()
            .and_then(|found| found.into_iter().next())
    }

    /// Runs `probe` every [`POLL`] until it answers `Some`, for at most [`WAIT`].
    async fn poll<T, F, Fut>(&self, mut probe: F) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(value) = probe().await {
                return Some(value);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Fails the test with `what` went wrong, where, and what the page showed instead.
    async fn fail(&self, what: &str) -> ! {
        let path = self.path().await;
        let text = self.page_text().await;
        panic!(
            "{what} on {path} within {} s; the page shows:\n{text}",
            WAIT.as_secs()
        );
    }

    /// Runs a Chrome DevTools Protocol command in the page (through chromedriver); answers its result.
    async fn devtools(&self, command: &str, params: Value) -> Value {
        self.client()
            .issue_cmd(ChromeCommand {
                path: "goog/cdp/execute",
                body: json!({"cmd": command, "params": params}),
            })
            .await
            .unwrap_or_else(|error| panic!("DevTools command {command}: {error}"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Without `close` (a test failed), the session is left to die with its processes.
        drop(self.client.take());
        kill_group(&mut self.driver);
    }
}

/// Waits until the chromedriver on `port` answers `/status` ready; false when it exits or 20 s pass.
async fn driver_ready(port: u16, driver: &mut Child) -> bool {
    let url = format!("http://127.0.0.1:{port}/status");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(response) = client.get(&url).send().await
            && let Ok(status) = response.json::<Value>().await
            && status["value"]["ready"] == true
        {
            return true;
        }
        if let Ok(Some(_)) = driver.try_wait() {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A WebDriver session on the chromedriver at `port`: headless Chromium (as root it needs `--no-sandbox`),
/// its profile in `profile`, its console logged.
async fn session(port: u16, profile: &Path) -> Client {
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1280,800",
                // Pages lay out on the whole viewport, as on phones: screenshots are as wide as it.
                "--hide-scrollbars",
                format!("--user-data-dir={}", profile.display()),
            ],
        },
        "goog:loggingPrefs": {"browser": "ALL"},
        "timeouts": {"pageLoad": 30_000, "script": 10_000},
    });
    let Value::Object(capabilities) = capabilities else {
        unreachable!("capabilities are a JSON object")
    };
    // chromedriver speaks plain HTTP on loopback: no TLS connector.
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .unwrap_or_else(|error| panic!("start a Chromium session on chromedriver: {error}"))
}

/// SIGKILL to chromedriver's process group (chromedriver and every Chromium process it started), then
/// reaps chromedriver.
fn kill_group(driver: &mut Child) {
    if let Ok(pgid) = i32::try_from(driver.id()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = driver.wait();
}

/// `text` as an XPath 1.0 string literal (which has no escapes: quotes are joined with `concat`).
fn xpath_literal(text: &str) -> String {
    if !text.contains('\'') {
        format!("'{text}'")
    } else if !text.contains('"') {
        format!("\"{text}\"")
    } else {
        let parts: Vec<String> = text.split('\'').map(|part| format!("'{part}'")).collect();
        format!("concat({})", parts.join(", \"'\", "))
    }
}

/// A chromedriver command beyond W3C WebDriver: a POST of `body` to `session/<id>/<path>`.
#[derive(Debug)]
struct ChromeCommand {
    path: &'static str,
    body: Value,
}

impl WebDriverCompatibleCommand for ChromeCommand {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        let session = session_id.unwrap_or_default();
        base_url.join(&format!("session/{session}/{}", self.path))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(self.body.to_string()))
    }
}

/// The element that has the keyboard's focus (see [`Browser::focused`]).
#[derive(Debug)]
pub struct Focused {
    /// Its tag name, lower case (`a`, `input`, `main`, …).
    pub tag: String,
    /// Its label, `aria-label` or text.
    pub text: String,
    /// Whether a focus outline is drawn around it.
    pub outlined: bool,
}
