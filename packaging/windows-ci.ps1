# The real-Windows job of .github/workflows/windows-exe.yml, runnable by hand on a Windows
# machine with Python 3.13 (from the repository's root, in PowerShell):
#
#   ./packaging/windows-ci.ps1                  install, build, check, run a session
#   ./packaging/windows-ci.ps1 build            install the packages, build and check the exe
#   ./packaging/windows-ci.ps1 session          run dist\SpotlightSupport.exe in a real session
#   ./packaging/windows-ci.ps1 units            the administrator-prompt detection, the hand-off
#                                               rules and the DPI mapping as unit tests
#   ./packaging/windows-ci.ps1 dpi              the exe runs Per-Monitor DPI v2 aware
#
# SPOTLIGHT_CONFIG chooses the configuration baked in (default support.example.json).
# "session" is packaging/session_check.py: a relay on 127.0.0.1, the exe, the test suite's
# scripted viewer, a PowerShell window receiving keys, and Close from the tray menu; it saves
# what the viewer drew and a screenshot in .\session-check. It needs the interactive desktop
# (a logged-in user, not a service).
param(
    [ValidateSet("all", "build", "session", "units", "dpi")]
    [string]$Part = "all"
)
$ErrorActionPreference = "Stop"
Set-Location (Split-Path -Parent $PSScriptRoot)

function Invoke-Checked {
    # Native commands do not stop the script when they fail: this does.
    param([string]$What, [scriptblock]$Command)
    Write-Host "== $What"
    & $Command
    if ($LASTEXITCODE -ne 0) { throw "$What failed (exit code $LASTEXITCODE)" }
}

$exe = "dist\SpotlightSupport.exe"

if ($Part -in "all", "build") {
    Invoke-Checked "install the agent's, the relay's and the tests' packages" {
        python -m pip install --upgrade pip
        if ($LASTEXITCODE -eq 0) { python -m pip install -e ".[agent,relay,dev]" }
    }
    Invoke-Checked "build $exe from build.spec" { pyinstaller --noconfirm build.spec }
    if (-not (Test-Path $exe)) { throw "build.spec produced no $exe" }
    $file = Get-Item $exe
    "{0:N1} MB" -f ($file.Length / 1MB)
    $version = $file.VersionInfo
    "$($version.CompanyName) / $($version.ProductName) / $($version.ProductVersion)"
    if (-not $version.ProductName) { throw "the exe has no version information" }
}

if ($Part -in "all", "units") {
    # Pure rules and the Win32 desktop watch on a real Windows desktop (no relay, no browser).
    Invoke-Checked "unit tests: administrator prompt, hand-off rules, DPI mapping" {
        python -m pytest -q -p no:cacheprovider tests/test_handoff.py tests/test_dpi_mapping.py `
            tests/test_windows_elevation.py
    }
}

if ($Part -in "all", "dpi") {
    if (-not (Test-Path $exe)) { throw "no ${exe}; run ./packaging/windows-ci.ps1 build first" }
    Invoke-Checked "$exe runs Per-Monitor DPI v2 aware (packaging/dpi_check.py)" {
        python packaging/dpi_check.py --exe $exe
    }
}

if ($Part -in "all", "session") {
    if (-not (Test-Path $exe)) { throw "no ${exe}; run ./packaging/windows-ci.ps1 build first" }
    Invoke-Checked "a real session with $exe (packaging/session_check.py)" {
        python packaging/session_check.py --exe $exe --out session-check
    }
}
