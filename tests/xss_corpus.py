"""A corpus of XSS payloads for the sanitizer and the encoders (tests/test_sanitize_*.py).

Written for bastion from the well-known families: plain script, event handlers, URL schemes and
their obfuscations (entities, controls, case, whitespace), parser differentials and mutation XSS
(comments, ``<noscript>``, foreign content, raw-text elements), attribute breakouts, DOM
clobbering, CSS, and breaking out of JavaScript strings. Every script payload calls ``alert``,
``confirm``, ``prompt`` or ``print`` so a browser test can tell whether one ran.
"""

from __future__ import annotations

from typing import Final

SCRIPT: Final = (
    "<script>alert(1)</script>",
    "<SCRIPT SRC=//evil.example/x.js></SCRIPT>",
    "<scr<script>ipt>alert(1)</scr</script>ipt>",
    "<script\x00>alert(1)</script>",
    '<script type="text/javascript">alert(1)</script>',
    "<script>/*</script><img src=x onerror=alert(1)>*/</script>",
    "<<script>alert(1);//<</script>",
    "<script/src=data:,alert(1)></script>",
    "<script>alert`1`</script>",
    "</title><script>alert(1)</script>",
    "</textarea><script>alert(1)</script>",
    "</style><script>alert(1)</script>",
)

HANDLERS: Final = (
    "<img src=x onerror=alert(1)>",
    "<IMG SRC=x OnErRoR=alert(1)>",
    "<img src=x onerror=&#97;lert(1)>",
    "<img/src=x/onerror=alert(1)>",
    '<img src="x" onerror  =  "alert(1)">',
    "<img src=`x`onerror=alert(1)>",
    "<body onload=alert(1)>",
    "<svg onload=alert(1)>",
    "<svg/onload=alert(1)//",
    "<p onmouseover=alert(1)>hover</p>",
    "<a onfocus=alert(1) autofocus href=#>x</a>",
    "<details open ontoggle=alert(1)>",
    "<video><source onerror=alert(1)></video>",
    "<audio src=x onerror=alert(1)>",
    "<input onfocus=alert(1) autofocus>",
    "<marquee onstart=alert(1)>x</marquee>",
    "<div onpointerenter=alert(1) style=position:fixed;inset:0>x</div>",
    "<b onclick=alert(1)>bold</b>",
    '<a href="https://ok.example" onclick="alert(1)">ok</a>',
    "<strong\nonmouseover=alert(1)>x</strong>",
    "<em/onclick=alert(1)>x</em>",
    '<p title="x" onclick="prompt(1)">x</p>',
)

URLS: Final = (
    "<a href=javascript:alert(1)>x</a>",
    '<a href="JaVaScRiPt:alert(1)">x</a>',
    '<a href=" javascript:alert(1)">x</a>',
    '<a href="java\tscript:alert(1)">x</a>',
    '<a href="java\nscript:alert(1)">x</a>',
    '<a href="java&#x09;script:alert(1)">x</a>',
    '<a href="&#106;avascript:alert(1)">x</a>',
    '<a href="&#x6A;&#x61;&#x76;&#x61;&#x73;&#x63;&#x72;&#x69;&#x70;&#x74;:alert(1)">x</a>',
    '<a href="javascript&colon;alert(1)">x</a>',
    '<a href="\x01javascript:alert(1)">x</a>',
    '<a href="vbscript:msgbox(1)">x</a>',
    '<a href="data:text/html,<script>alert(1)</script>">x</a>',
    '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">x</a>',
    '<a href="file:///etc/passwd">x</a>',
    '<img src="javascript:alert(1)">',
    "<iframe src=javascript:alert(1)></iframe>",
    '<iframe srcdoc="<script>alert(1)</script>"></iframe>',
    '<object data="javascript:alert(1)"></object>',
    '<embed src="data:text/html,<script>alert(1)</script>">',
    '<form action="javascript:alert(1)"><button>go</button></form>',
    '<button formaction="javascript:alert(1)">go</button>',
    '<a href="https://ok.example" target="_blank">tabnabbing</a>',
    '<a href="https://ok.example" rel="opener">opener</a>',
    '<blockquote cite="javascript:alert(1)">q</blockquote>',
    '<base href="javascript:alert(1)//">',
    '<meta http-equiv="refresh" content="0;url=javascript:alert(1)">',
    '<link rel="stylesheet" href="javascript:alert(1)">',
    '<a href="//evil.example">protocol-relative</a>',
)

MUTATION: Final = (
    '<noscript><p title="</noscript><img src=x onerror=alert(1)>">',
    "<svg><style><img src=x onerror=alert(1)></style></svg>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    '<math><mi><mglyph><svg><mtext><textarea><path id="</textarea><img onerror=alert(1) src=x>">',
    '<svg></p><style><a id="</style><img src=1 onerror=alert(1)>">',
    "<!--><img src=x onerror=alert(1)>-->",
    "<!-- --!><img src=x onerror=alert(1)> -->",
    "<!--<img src=x onerror=alert(1)>-->",
    "<![CDATA[<img src=x onerror=alert(1)>]]>",
    "<xmp><img src=x onerror=alert(1)></xmp>",
    "<noembed><img src=x onerror=alert(1)></noembed>",
    "<template><img src=x onerror=alert(1)></template>",
    "<title><img src=x onerror=alert(1)></title>",
    "<textarea><img src=x onerror=alert(1)></textarea>",
    "<plaintext><img src=x onerror=alert(1)>",
    "<p><svg><foreignObject><img src=x onerror=alert(1)></foreignObject></svg></p>",
    "<form><math><mtext></form><form><mglyph><style></math><img src onerror=alert(1)>",
    "<table><td><a href=javascript:alert(1)>x</a></table>",
    "<a href='x\"onclick=alert(1)//'>x</a>",
    "<p>unclosed <b>bold <i>italic",
    "<</p>img src=x onerror=alert(1)>",
    "&lt;img src=x onerror=alert(1)&gt;",
    "<img src=x onerror=alert(1)//",
    "<img src=x onerror=alert(1)\x00>",
    "<a\u3000href=javascript:alert(1)>x</a>",
)

ATTRIBUTES: Final = (
    '"><script>alert(1)</script>',
    "'><script>alert(1)</script>",
    '" onmouseover="alert(1)',
    "' onmouseover='alert(1)",
    " onmouseover=alert(1) x=",
    "x onfocus=alert(1) autofocus",
    "`onmouseover=alert(1)",
    "&quot; onclick=&quot;alert(1)",
    'x"/><svg onload=alert(1)>',
    '<a id=config href="https://evil.example">clobber</a>',
    "<img name=cookie src=x>",
    '<p style="background:url(javascript:alert(1))">css</p>',
    '<div style="width:expression(alert(1))">css</div>',
    "<style>@import 'javascript:alert(1)';</style>",
    '<p class="x" style="position:fixed;top:0;left:0;width:100%;height:100%">overlay</p>',
)

JAVASCRIPT: Final = (
    '";alert(1);//',
    "';alert(1);//",
    '\\";alert(1);//',
    "</script><script>alert(1)</script>",
    "</SCRIPT ><script>alert(1)</script>",
    "<!--<script>",
    "${alert(1)}",
    "`;alert(1);`",
    "\u2028alert(1)\u2029",
    "\r\nalert(1)",
    "\\u0022;alert(1)//",
    '\x00";alert(1)//',
)

PLAIN: Final = (
    "Ünïcödé — 日本語 🛡️ text",
    "a < b && c > d",
    'Tom & Jerry\'s "show"',
    "https://example.com/path?q=1&r=2",
    "",
)

PAYLOADS: Final = SCRIPT + HANDLERS + URLS + MUTATION + ATTRIBUTES + JAVASCRIPT + PLAIN
"""Every payload, in a stable order (test ids are their positions)."""
