"""`python -m charmlp.summary DIR ...`: the summary command under its name from before the packages; the same as
`python -m charmlp.sweep DIR ...` (charmlp/sweep/__main__.py), kept so that scripts written for it go on working."""

from charmlp.sweep.__main__ import main

if __name__ == "__main__":
    main()
