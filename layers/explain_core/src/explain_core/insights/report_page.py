"""``index.html`` of an insights job: every kind's pictures and headline figures, beside report.json.

Links are relative to the job's folder, so the page works from S3 (presigned or website) and from a local
copy. Everything from the user (titles, labels, keys) is escaped.
"""

import html
import json

STYLE = ("body{font-family:sans-serif;margin:1.5em;max-width:1100px}img{max-width:100%;border:1px solid #ddd}"
         "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;font-size:90%}"
         ".failed{color:#b00}")


def report_page(report: dict) -> bytes:
    prefix = report["job"]["results_prefix"]
    model = report["model"]
    title = report.get("title") or f"Insights of {model['name']}/{model['version']}"
    out = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title><style>{STYLE}</style>",
           f"<h1>{html.escape(title)}</h1>",
           f"<p>Model {html.escape(model['name'])}/{html.escape(model['version'])}, status "
           f"<b>{html.escape(report['status'])}</b>, {len(report['parts'])} parts "
           f"({report['seconds']['parts']:.0f} s of computation). <a href='report.json'>report.json</a></p>"]
    for name, section in report["kinds"].items():
        out.append(f"<h2>{html.escape(name.replace('_', ' '))} <small>({html.escape(section['status'])})</small></h2>")
        if "error" in section:
            out.append(f"<p class='failed'>{html.escape(section['error'].get('message', ''))}</p>")
        for picture in section.get("pictures", []):
            relative = picture[len(prefix):] if picture.startswith(prefix) else picture
            out.append(f"<p><img src='{html.escape(relative, quote=True)}' alt='{html.escape(relative)}'></p>")
        failed = [part for part in report["parts"] if part["kind"] == name and part["status"] == "failed"]
        if failed:
            out.append("<table><tr><th>failed part</th><th>error</th></tr>" + "".join(
                f"<tr><td>{html.escape(part['title'])}</td><td class='failed'>"
                f"{html.escape((part.get('error') or {}).get('message', ''))}</td></tr>" for part in failed)
                + "</table>")
    out.append(f"<details><summary>specification</summary><pre>{html.escape(json.dumps(report['spec'], indent=2))}"
               "</pre></details>")
    return "\n".join(out).encode()
