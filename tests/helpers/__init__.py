"""What the tests share, so that no test module imports from another:

- relay.py: the relay as a real process on 127.0.0.1 port 0 (conftest's fixtures start it)
- wire.py: raw JSON and frames over websockets, for what no well-behaved peer would send
- viewer.py: ScriptedViewer, the scripted support person
- agent.py: ScriptedAgent, the scripted customer's program
- desktop.py: Xvfb, screenshots, X windows and waiting for a condition
- browser.py: Chromium through Playwright and one support person's tab in it
- wine.py: the Windows exe under Wine: its build, a clean prefix, Wine commands, its processes
"""
