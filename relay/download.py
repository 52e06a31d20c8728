"""The customer's page, `/`: what the program does, the download, whom to call, SmartScreen.

Pure: rendered per request from the company's name, its phone lines (`serve --phone`) and
the programs in `--downloads DIR` right now; everything inserted is escaped, and a phone
link's target keeps only digits and "+". Its stylesheet is `customer/customer.css` (the
relay's CSP allows no inline style); the support staff's console is at /console/.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html import escape

DEFAULT_COMPANY = "Remote support"
CONSOLE_URL = "/console/"


@dataclass(frozen=True)
class Program:
    """A file offered for download: its URL, its name and its size in bytes."""

    url: str
    name: str
    size: int


def phone_line(text: str) -> tuple[str, str]:
    """`"David: 269 998 1389"` -> ("David", "269 998 1389"); without a colon, no name."""
    name, colon, number = text.partition(":")
    return (name.strip(), number.strip()) if colon else ("", text.strip())


def size_words(size: int) -> str:
    if size < 1000 * 1000:
        return f"{max(1, round(size / 1000))} KB"
    return f"{size / 1000 / 1000:.1f} MB"


def _phones(phones: tuple[str, ...], company: str) -> str:
    if not phones:
        return ("<p>Call the support person who asked you to open this page; they stay on the "
                "phone with you the whole time.</p>")
    rows = []
    for line in phones:
        name, number = phone_line(line)
        dial = re.sub(r"[^0-9+]", "", number)
        shown = escape(number)
        link = f'<a href="tel:{dial}">{shown}</a>' if dial else shown
        who = f'<span class="who">{escape(name)}</span> ' if name else ""
        rows.append(f"<li>{who}{link}</li>")
    return (f"<p>Call {company} and stay on the phone while you follow the steps:</p>\n"
            f'<ul class="phones" data-testid="phones">\n' + "\n".join(rows) + "\n</ul>")


def _programs(programs: list[Program]) -> str:
    if not programs:
        return ('<p class="missing">The program is not offered on this server yet. '
                "Please ask the support person you are talking to.</p>")
    # Windows programs first: that is what almost every customer needs.
    ordered = sorted(programs, key=lambda p: (not p.name.lower().endswith(".exe"),
                                              p.name.lower()))
    return "\n".join(
        f'<a class="download" href="{escape(p.url)}" download>Download the program'
        f' <span>{escape(p.name)}, {size_words(p.size)}</span></a>'
        for p in ordered
    )


def render_customer_page(company: str, phones: tuple[str, ...],
                         programs: list[Program]) -> bytes:
    """The page, given the company's name, its phone lines and the programs offered now."""
    who = escape(company or DEFAULT_COMPANY)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{who}: remote support</title>
<link rel="stylesheet" href="/customer.css">
<link rel="icon" href="/favicon.svg" type="image/svg+xml">
</head>
<body>
<main>
<h1>{who}: remote support</h1>
<p class="lead">This small program shows your screen to the {who} support person you are on
the phone with, so they can see what you see and, when you both agree, use your mouse and
keyboard to help. They see it only while you allow it.</p>

<ul class="promises">
<li><strong>Nothing is installed.</strong> The program runs once and leaves nothing behind.</li>
<li><strong>You stay in charge.</strong> You can pause or end the session at any time.</li>
<li><strong>Only the person you chose</strong> can connect, and only while the program runs.
</li>
</ul>

<section class="get" aria-label="Download">
{_programs(programs)}
</section>

<h2>1. Call us</h2>
{_phones(phones, who)}

<h2>2. Run the program</h2>
<ol>
<li>Download the program above and open it. Your browser may ask whether to keep or open it:
choose to keep and open it.</li>
<li>Click the name of the support person you are talking to.</li>
<li>A small window shows what is happening, with the code your support person may ask you
to read out. Once they accept, they can see your screen.</li>
<li>To stop, click <strong>Pause</strong> or <strong>End session</strong> in that window,
or right-click the icon next to the clock and choose <strong>Close</strong>. When your support
person ends the session, the program closes by itself.</li>
</ol>

<h2>If Windows says "Windows protected your PC"</h2>
<p>Windows SmartScreen shows this blue window for programs it does not know yet, for example a
new version, or a program without a digital signature. It does not mean something is wrong
with it. If you downloaded the program from this page:</p>
<ol class="smartscreen">
<li>Click <strong>More info</strong>.</li>
<li>Click <strong>Run anyway</strong>.</li>
</ol>
<p class="aside">A digitally signed build of the program avoids this warning once Windows
knows it. Your antivirus may ask as well: allow it to run.</p>

<p class="note">Remote support sessions are billed according to your agreement with {who}.
The time is counted from when the support person accepts until the session ends; paused time
is not billed.</p>
</main>
<footer>
<a class="staff" href="{CONSOLE_URL}">Support staff sign in</a>
</footer>
</body>
</html>
""".encode()
