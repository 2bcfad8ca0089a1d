// test_index_page.mjs — build/reports/index.html checked in a real browser
// (make reports-test).
//
//     node reports/test_index_page.mjs [REPORTS_DIR]      (default: build/reports)
//
// Opens the page in headless Chromium (CHROMIUM, default /usr/bin/chromium,
// driven by playwright-core from reports/package.json) with a fresh
// profile and no network, then checks:
//   - it renders: the title, the heading and the five report cards are
//     visible with a real size, nothing overflows the window sideways, and
//     the browser logged no error;
//   - it is self-contained: the page requested nothing but itself;
//   - its figures are the report files' own: this test reads clauses.tsv,
//     scenarios.tsv, coverage.txt, fuzz.md and bench/results.tsv itself (not
//     through make-index) and compares every figure it can compute; a report
//     that does not exist must show as "not generated — run make X" and
//     carry no figure;
//   - every link resolves: it is a relative file: link to a file that
//     exists, and the HTML ones load in the browser.
// Saves a screenshot of the whole page to REPORTS_DIR/index.png.
// Exit status 0 when every check passes, 1 otherwise (each failure printed).

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { chromium } from "playwright-core";

const reports = path.resolve(process.argv[2] || "build/reports");
const indexPath = path.join(reports, "index.html");
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const failures = [];
let checks = 0;

function check(ok, what) {
  checks++;
  if (!ok) {
    failures.push(what);
    console.log("  FAIL  " + what);
  }
}

function eq(actual, expected, what) {
  check(actual === expected, `${what}: page shows ${JSON.stringify(actual)}, report says ${JSON.stringify(expected)}`);
}

// ---------------------------------------------------------------- the files

function readTsv(file) {
  const text = fs.readFileSync(file, "utf8");
  const lines = text.split("\n").filter((l) => l.length > 0);
  const head = lines[0].split("\t");
  return lines.slice(1).map((l) => {
    const cells = l.split("\t");
    return Object.fromEntries(head.map((h, i) => [h, cells[i] ?? ""]));
  });
}

// Each returns the figures the page must show ({data-figure: text}), or null
// when the file does not exist.
const expectations = {
  clauses() {
    const f = path.join(reports, "clauses.tsv");
    if (!fs.existsSync(f)) return null;
    const rows = readTsv(f);
    const n = (s) => rows.filter((r) => r.status === s).length;
    const byClause = new Map();
    for (const r of rows) byClause.set(r.clause, [...(byClause.get(r.clause) || []), r.status]);
    let passing = 0;
    for (const sts of byClause.values())
      if (sts.includes("pass") && sts.every((s) => s === "pass" || s === "n/a")) passing++;
    return {
      "clauses-passing": `${passing} / ${byClause.size}`,
      "clause-rows-pass": `${n("pass")} / ${n("pass") + n("fail") + n("gap")}`,
      "clause-rows-fail": String(n("fail")),
      "clause-rows-gap": String(n("gap")),
      "clause-rows-na": String(n("n/a")),
    };
  },
  scenarios() {
    const f = path.join(reports, "scenarios.tsv");
    if (!fs.existsSync(f)) return null;
    const rows = readTsv(f);
    const pass = rows.filter((r) => r.status === "pass").length;
    const fail = rows.filter((r) => r.status === "fail").length;
    return {
      "scenarios-passing": `${pass} / ${pass + fail}`,
      "scenarios-failed": String(fail),
      "scenarios-na": String(rows.length - pass - fail),
      "scenarios-count": String(new Set(rows.map((r) => r.scenario)).size),
    };
  },
  coverage() {
    const f = path.join(reports, "coverage.txt");
    if (!fs.existsSync(f)) return null;
    const kv = {};
    for (const line of fs.readFileSync(f, "utf8").split("\n")) {
      const m = line.match(/^([a-z-]+): (.*)$/);
      if (m && m[1] !== "file") kv[m[1]] = m[2];
    }
    const out = {
      "coverage-lines": kv.lines,
      "coverage-functions": kv.functions,
      "coverage-branches": kv.branches,
    };
    if (kv["floor-lines"] !== undefined)
      out["coverage-floors"] = `${kv["floor-lines"]}% / ${kv["floor-branches"]}%`;
    return out;
  },
  fuzz() {
    const f = path.join(reports, "fuzz.md");
    if (!fs.existsSync(f)) return null;
    // fuzz/report.sh writes a campaign table (| target | ... | result | ...)
    // and a planted-bug table (| bug | ... | found | ...).
    const lines = fs.readFileSync(f, "utf8").split("\n");
    const tables = [];
    for (let i = 0; i + 1 < lines.length; i++) {
      if (!lines[i].trim().startsWith("|") || !/^\|?\s*:?-+/.test(lines[i + 1].trim())) continue;
      const cells = (l) => l.trim().replace(/^\||\|$/g, "").split("|").map((c) => c.trim());
      const head = cells(lines[i]).map((c) => c.toLowerCase());
      const rows = [];
      for (i += 2; i < lines.length && lines[i].trim().startsWith("|"); i++)
        rows.push(Object.fromEntries(cells(lines[i]).map((c, k) => [head[k], c])));
      tables.push(rows);
    }
    const campaign = tables.find((t) => t.length && "target" in t[0] && "result" in t[0]);
    const planted = tables.find((t) => t.length && "bug" in t[0] && "found" in t[0]);
    if (!campaign) return null; // no campaign yet: the tile must say "not generated"
    const findings = campaign.filter((r) => /finding/i.test(r.result) && !/no finding/i.test(r.result)).length;
    const out = { "fuzz-clean": `${campaign.length - findings} / ${campaign.length}` };
    if (campaign.every((r) => /^\d+$/.test(r.runs ?? "")))
      out["fuzz-runs"] = String(campaign.reduce((a, r) => a + Number(r.runs), 0));
    if (planted) {
      const found = planted.filter((r) => ["yes", "found", "true"].includes(r.found.replace(/[* ]/g, "").toLowerCase())).length;
      out["fuzz-planted-found"] = `${found} / ${planted.length}`;
    }
    return out;
  },
  bench() {
    const f = path.join(reports, "bench", "results.tsv");
    if (!fs.existsSync(f)) return null;
    const rows = readTsv(f);
    const num = (s) => (s === undefined || s === "" || isNaN(Number(s)) ? null : Number(s));
    const metric = ["tp_k64", "lat_median_us", "tp_k1", "lat_p99_us"].find((m) =>
      rows.some((r) => r.metric === m && num(r.ratio_raw_limit) !== null));
    if (!metric) return {};
    let best = null;
    for (const r of rows)
      if (r.metric === metric && r.impl.startsWith("evpol-") && num(r.ratio_raw_limit) !== null)
        if (!best || num(r.ratio_raw_limit) < num(best.ratio_raw_limit)) best = r;
    return best ? { "bench-best": best.ratio_raw_limit } : {};
  },
  mutation() {
    const f = path.join(reports, "mutation.txt");
    if (!fs.existsSync(f)) return null;
    const m = /^mutation: (\d+) killed \/ (\d+) \((\d+(?:\.\d+)?)%\)/.exec(fs.readFileSync(f, "utf8"));
    if (!m) throw new Error("no mutation headline");
    return { "mutation-score": `${m[3]}%`, "mutation-killed": `${m[1]} / ${m[2]}` };
  },
};

const makeTarget = {
  clauses: "make conformance",
  scenarios: "make scenarios",
  coverage: "make coverage",
  fuzz: "make fuzz",
  bench: "make bench",
  mutation: "make mutation",
};

// ---------------------------------------------------------------- the page

async function main() {
  if (!fs.existsSync(indexPath)) {
    console.log(`reports-test: ${indexPath} does not exist (make reports writes it)`);
    return 1;
  }
  if (!fs.existsSync(executablePath)) {
    console.log(`reports-test: no browser at ${executablePath} (CHROMIUM=...)`);
    return 1;
  }
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "evpol-reports-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
    viewport: { width: 1280, height: 900 },
    offline: true,
  });
  try {
    return await run(context);
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

async function run(context) {
  const page = context.pages()[0] || (await context.newPage());
  const indexUrl = pathToFileURL(indexPath).href;
  const requests = [];
  const errors = [];
  // Anything but the page itself is a dependency the page must not have.
  await context.route("**/*", (route) => {
    const u = route.request().url();
    if (u !== indexUrl) requests.push(u);
    return u.startsWith("file:") ? route.continue() : route.abort();
  });
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(String(e)));

  const resp = await page.goto(indexUrl, { waitUntil: "load" });
  check(resp === null || resp.ok(), `the page loads (${indexUrl})`);
  eq(await page.title(), "evpol reports", "title");
  check(await page.locator("h1").isVisible(), "the heading is visible");

  // Self-contained and clean.
  check(requests.length === 0, `the page requests nothing else (it requested: ${requests.join(", ")})`);
  check(errors.length === 0, `no browser error (${errors.join("; ")})`);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 0, `nothing overflows the 1280 px window sideways (by ${overflow} px)`);

  // The tiles: one per report, each visible; figures (in the tile and in
  // the report's detail panel) as in the files.
  for (const [key, expect] of Object.entries(expectations)) {
    const card = page.locator(`section[data-report="${key}"]`);
    const panel = page.locator(`section[data-detail="${key}"]`);
    const scope = page.locator(`section[data-report="${key}"], section[data-detail="${key}"]`);
    check((await card.count()) === 1, `one tile for ${key}`);
    if ((await card.count()) !== 1) continue;
    const box = await card.boundingBox();
    check(box && box.width > 150 && box.height > 60, `the ${key} tile has a real size (${JSON.stringify(box)})`);
    check(await card.isVisible(), `the ${key} tile is visible`);
    const state = await card.getAttribute("data-state");
    let want;
    try {
      want = expect();
    } catch (e) {
      check(state === "unreadable", `${key}: the report cannot be read here (${e.message}) and the page says so (state ${state})`);
      continue;
    }
    const figures = scope.locator("[data-figure]");
    if (want === null) {
      eq(state, "missing", `${key}: the report does not exist, so the tile`);
      const text = (await card.innerText()).replace(/\s+/g, " ");
      check(text.includes(`not generated — run ${makeTarget[key]}`),
            `${key}: the tile says "not generated — run ${makeTarget[key]}" (it says: ${text})`);
      eq(await figures.count(), 0, `${key}: number of figures for a report that does not exist`);
      eq(await panel.count(), 0, `${key}: number of detail panels for a report that does not exist`);
      continue;
    }
    check(!["missing", "unreadable"].includes(state), `${key}: the report exists, so the tile is not "${state}"`);
    for (const [fig, value] of Object.entries(want)) {
      const el = scope.locator(`[data-figure="${fig}"]`);
      if ((await el.count()) !== 1) {
        check(false, `${key}: figure ${fig} (${value}) is on the page once (found ${await el.count()})`);
        continue;
      }
      eq((await el.innerText()).trim(), value, `${key}: ${fig}`);
      check(await el.isVisible(), `${key}: figure ${fig} is visible`);
    }
    const headline = card.locator(".figure .value");
    check((await headline.count()) === 1 && (await headline.isVisible()), `${key}: the headline figure is visible`);
    const hb = await headline.boundingBox();
    check(hb && box && hb.x + hb.width <= box.x + box.width + 0.5,
          `${key}: the headline figure fits in its tile`);
  }

  // Every link resolves.
  const hrefs = await page.$$eval("a[href]", (as) => as.map((a) => [a.getAttribute("href"), a.href]));
  // ... and the page links to each report it shows.
  const reportPage = { clauses: "clauses.html", scenarios: "scenarios.md", coverage: "coverage/index.html",
                       fuzz: "fuzz.md", bench: "bench/results.md", mutation: "mutation/index.html" };
  for (const [key, file] of Object.entries(reportPage)) {
    const state = await page.locator(`section[data-report="${key}"]`).getAttribute("data-state");
    if (["missing", "unreadable"].includes(state) || !fs.existsSync(path.join(reports, file))) continue;
    check(hrefs.some(([raw]) => raw === file), `the ${key} tile links to ${file}`);
  }
  for (const [raw, abs] of hrefs) {
    check(!/^[a-z]+:/i.test(raw) && !raw.startsWith("/"), `link ${raw} is relative (the reports directory moves as a whole)`);
    if (!abs.startsWith("file:")) {
      check(false, `link ${raw} leads to a file (${abs})`);
      continue;
    }
    const target = fileURLToPath(abs.split("#")[0]);
    check(target.startsWith(reports + path.sep), `link ${raw} stays inside ${reports}`);
    check(fs.existsSync(target) && fs.statSync(target).isFile(), `link ${raw}: ${target} exists`);
    if (target.endsWith(".html") && fs.existsSync(target)) {
      const p = await context.newPage();
      const r = await p.goto(abs, { waitUntil: "load" }).catch((e) => e);
      check(!(r instanceof Error) && (await p.locator("body").innerText()).trim().length > 0,
            `link ${raw} opens in the browser and shows something`);
      await p.close();
    }
  }

  const shot = path.join(reports, "index.png");
  await page.screenshot({ path: shot, fullPage: true });
  check(fs.existsSync(shot) && fs.statSync(shot).size > 10000, `screenshot saved to ${shot}`);

  const states = await page.$$eval("section[data-report]", (s) => s.map((x) => `${x.dataset.report}: ${x.dataset.state}`));
  console.log(`reports-test: ${states.join(", ")}`);
  console.log(`reports-test: ${checks - failures.length} of ${checks} checks passed; screenshot ${shot}`);
  return failures.length ? 1 : 0;
}

main().then((rc) => process.exit(rc), (e) => {
  console.log("reports-test: " + (e && e.stack ? e.stack : e));
  process.exit(1);
});
