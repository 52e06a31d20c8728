"""The customer's page, `/download`: what will happen, how to end it, and the program itself.

Pure: the page is rendered once at start-up from the company's name and the files of
`--downloads DIR`; everything inserted is escaped. Its stylesheet is `viewer/download.css`,
served like the viewer's files (the relay's CSP allows no inline style).
"""

from __future__ import annotations

from html import escape

DEFAULT_COMPANY = "Remote support"


def _program_links(urls: list[str], names: list[str]) -> str:
    if not urls:
        return ('<p class="missing">The program is not offered on this server yet. '
                "Please ask the support person you are talking to.</p>")
    # Windows programs first: that is what almost every customer needs.
    order = sorted(range(len(urls)), key=lambda i: (not names[i].lower().endswith(".exe"),
                                                    names[i].lower()))
    return "\n".join(
        f'<a class="download" href="{escape(urls[i])}" download>'
        f"Initiate remote support <span>{escape(names[i])}</span></a>"
        for i in order
    )


def render_download_page(company: str, files: dict[str, str]) -> bytes:
    """The page, given the company's name and {url: file name} of the programs offered."""
    who = escape(company or DEFAULT_COMPANY)
    links = _program_links(list(files), list(files.values()))
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{who}: remote support</title>
<link rel="stylesheet" href="/download.css">
<link rel="icon" href="/favicon.svg" type="image/svg+xml">
</head>
<body>
<main>
<h1>{who}: remote support</h1>
<p class="lead">While you are on the phone with one of our support people, this lets them see
your screen and, if needed, use your mouse and keyboard to help you.</p>

<section class="get">
{links}
</section>

<h2>How it works</h2>
<ol>
<li>Stay on the phone with your support person.</li>
<li>Download the program above and run it. Your browser may ask whether to keep or run it,
and your antivirus may ask whether to allow it: allow it.</li>
<li>Click the name of the support person you are talking to.</li>
<li>A <strong>yellow</strong> icon appears next to the clock, with the message
"Connection active". When your support person accepts, it turns <strong>green</strong>: from
then on they see your screen, and can take control of the mouse and keyboard when needed.</li>
<li>To end the session at any time, <strong>right-click the icon and choose Close</strong>.
When your support person ends it, the icon disappears by itself.</li>
</ol>

<h2>Your safety</h2>
<ul>
<li>Nothing is installed on your computer, and nothing stays behind when the program ends.</li>
<li>Only the support person you chose can connect, and only while the program runs. To let
us connect again another time, run the program again.</li>
<li>The connection is encrypted, and you can end it whenever you want.</li>
</ul>

<p class="note">Remote support sessions are billed according to your agreement with {who}.</p>
</main>
</body>
</html>
""".encode()
