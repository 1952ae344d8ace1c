"""The bundled demo dataset: synthetic IT-support tickets, written by `steward demo`.

Everything here is the project's own text, generated with a seeded `random.Random` from the
hand-written building blocks below (templates and slot values), so the same seed always writes
the same bytes. `write_demo` produces, under `<workdir>/data/`:

- `train.csv`, `val.csv`, `test.csv` (`text,label`): labelled tickets in six categories,
  split 70/15/15 per label. About 8% of tickets mention two categories and are labelled by the
  main issue, and about 11% are terse ("It's not working since 9am.") with little or no hint of
  their category, so the task is learnable but not trivial: TF-IDF + logistic regression scores
  a macro-F1 of about 0.91 on the test split of the default seed.
- `corpus.txt`: unlabelled in-domain text for continued pretraining (ticket bodies, agent replies,
  knowledge-base snippets, status updates), one document per line.
- `current.csv` (`text`): a fresh batch from the training distribution (no drift).
- `drifted.csv` (`text`): a shifted batch: tickets after a migration to a new collaboration suite
  ("Nimbus Workspace"), long chat transcripts and a phishing/security-incident outbreak.

and `<workdir>/steward.yaml`, the config that `steward run` uses on it.
"""

from __future__ import annotations

import csv
import io
import random
import re
from collections.abc import Callable, Iterable
from pathlib import Path

LABELS: tuple[str, ...] = ("access", "hardware", "network", "software", "email", "printing")

# Share of each label among labelled tickets (and in current.csv).
LABEL_WEIGHTS: dict[str, float] = {
    "access": 0.19,
    "hardware": 0.16,
    "network": 0.17,
    "software": 0.19,
    "email": 0.17,
    "printing": 0.12,
}

N_LABELLED = 1800
N_CURRENT = 400
N_DRIFTED = 400
N_CORPUS = 3200
AMBIGUOUS_FRACTION = 0.08  # tickets that mention two categories
VAGUE_FRACTION = 0.12  # of the others: terse tickets with little or no hint of the category
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)

# --------------------------------------------------------------------------------------------
# Slot values. A template's "{slot}" is replaced by a random value of SLOTS["slot"]; values may
# themselves contain slots.
# --------------------------------------------------------------------------------------------

SLOTS: dict[str, tuple[str, ...]] = {
    "laptop": (
        "Dell Latitude 7440", "Lenovo ThinkPad T14", "ThinkPad X1 Carbon", "MacBook Pro 14",
        "MacBook Air", "HP EliteBook 840", "Surface Laptop 5", "Dell Precision 5570", "laptop",
        "work laptop", "company laptop",
    ),
    "monitor": ("Dell U2723QE", "LG 27UK850", "Samsung S27", "HP E24 G5", "Dell P2422H", "BenQ PD2705"),
    "dock": (
        "Dell WD19 dock", "ThinkPad USB-C dock", "docking station", "dock", "CalDigit TS4",
        "HP Thunderbolt dock G4",
    ),
    "printer": (
        "HP LaserJet M607", "Canon imageRUNNER C3530", "Xerox VersaLink C405", "Brother HL-L6200",
        "Kyocera TASKalfa 3253ci", "Ricoh IM C3000", "Canon i-SENSYS", "HP Color LaserJet",
    ),
    "printer_name": ("PRN-{office_code}-{n}", "PRT-{office_code}-0{n}", "{office_code}-MFP-{n}"),
    "office_code": ("BER", "LYO", "AUS", "MAD", "DUB", "WAW", "HQ"),
    "app": (
        "Excel", "Word", "PowerPoint", "Adobe Acrobat", "Zoom", "Slack", "SAP GUI", "Visual Studio Code",
        "Tableau", "AutoCAD", "Jira", "Power BI", "Chrome", "Firefox", "Teams", "Notepad++", "7-Zip",
        "SolidWorks", "RStudio", "Docker Desktop", "Citrix Workspace", "Salesforce desktop app",
    ),
    "system": (
        "SAP", "Salesforce", "Jira", "Confluence", "SharePoint", "Workday", "the HR portal", "GitHub",
        "ServiceNow", "the expenses tool", "Concur", "the CRM", "the finance dashboard", "Okta",
    ),
    "office": (
        "Berlin", "Lyon", "Austin", "Madrid", "Dublin", "Warsaw", "the HQ building", "Building B",
        "the Austin office", "the Dublin office", "the warehouse",
    ),
    "office2": ("Lyon", "Madrid", "Building C", "the old office", "reception", "the 2nd floor"),
    "floor": ("1st", "2nd", "3rd", "4th", "5th", "ground", "6th"),
    "room": (
        "Everest", "Kilimanjaro", "Fuji", "Atlas", "Orion", "Apollo", "Board Room", "4.12", "2.07",
        "Training Room A", "Lisbon",
    ),
    "desk": ("D-{n}{n}", "desk {n}{n}", "hot desk {n}{n}", "B{n}-{n}{n}", "{n}.{n}{n}"),
    "n": ("1", "2", "3", "4", "5", "6", "7", "8", "9"),
    "time": (
        "since this morning", "since 9am", "since Monday", "after the update last night",
        "since yesterday afternoon", "for about two days", "since I came back from holiday",
        "since lunch", "for a week now", "since the office move", "since around 10:30",
        "since Friday",
    ),
    "day": (
        "on Monday", "last Friday", "yesterday", "earlier this week", "at the end of last month",
        "this morning",
    ),
    "future_day": (
        "tomorrow", "on Monday", "next week", "on Thursday", "later today", "at the start of next month",
    ),
    "clock": ("11:00", "2pm", "15:30", "noon", "4pm", "9:30", "end of day"),
    "name": (
        "Anna", "Raj", "Sofia", "Tom", "Lukas", "Priya", "Mateo", "Chen", "Fatima", "Olivier", "Ines",
        "Marek", "Hannah", "Kwame", "Yuki", "Daniel", "Aisha", "Jonas", "Elena", "Sam",
    ),
    "surname": ("Weber", "Patel", "Rossi", "Nguyen", "Kowalski", "Martin", "Garcia", "Okafor", "Schmidt"),
    "person": ("{name} {surname}", "my manager", "{name} from {team}", "the CFO", "my assistant", "{name}"),
    "manager": ("{name} {surname}", "my manager", "my team lead", "{name}"),
    "newuser": ("{name} {surname}", "a new contractor", "our new intern", "the new analyst"),
    "leaver": ("{name} {surname}", "{name}", "the contractor {name} {surname}"),
    "team": (
        "Finance", "Sales", "Marketing", "HR", "Legal", "Engineering", "Customer Success", "Procurement",
        "Logistics", "Data", "Facilities", "Payroll",
    ),
    "user": ("{lname}", "{lname}{n}", "{lname}.{n}{n}"),
    "lname": (
        "aweber", "rpatel", "srossi", "tnguyen", "lkowalski", "pmartin", "mgarcia", "cokafor", "jschmidt",
    ),
    "share": (
        "Finance", "Projects", "Contracts", "Marketing-Assets", "HR-Confidential", "Reports", "Q3-Board",
    ),
    "group": (
        "PO-Approvers", "SG-Finance-Read", "Sales-EMEA", "VPN-Contractors", "Jira-Admins", "GL-Reporting",
    ),
    "mfa_app": (
        "Microsoft Authenticator", "Okta Verify", "Google Authenticator", "Duo Mobile", "authenticator",
    ),
    "auth_error": ("AADSTS50126", "AADSTS50076", "AADSTS53003", "E401", "0x80090308", "AUTH-017", "500121"),
    "vpn": ("GlobalProtect", "Cisco AnyConnect", "FortiClient", "the VPN client", "the VPN", "AnyConnect"),
    "vpn_error": (
        "gateway unreachable", "connection attempt has failed", "Login failed", "tunnel negotiation failed",
        "certificate validation failure", "The VPN connection was terminated", "error 809",
    ),
    "wifi": ("Corp-WiFi", "CORP-SECURE", "Guest-WiFi", "the office Wi-Fi", "the wifi", "eduroam"),
    "intranet": (
        "the intranet", "intranet.corp.local", "wiki.corp.local", "jira.corp.local", "the timesheet site",
    ),
    "website": ("github.com", "pypi.org", "a supplier portal", "linkedin.com", "the vendor's download site"),
    "server": ("fileserver01", "the build server", "sql-prod-02", "10.20.4.15", "the print server"),
    "fileserver": ("fs01", "fileserver02", "corp-nas", "ber-fs-01"),
    "remote_place": ("home", "a hotel in Madrid", "my parents' place", "a client site", "the airport lounge"),
    "os": ("Windows", "Windows 11", "macOS", "macOS Sonoma", "Windows 10"),
    "app_error": (
        "0xc0000142", "0xc000007b", "APPCRASH", "E_FAIL", "code 1603",
        "'The application was unable to start'",
    ),
    "sc_error": ("0x87D00607", "0x80070643", "0x87D00324", "1603", "0x800700C1"),
    "kb": ("KB5034441", "KB5031356", "KB5035853", "the cumulative update", "the 23H2 feature update"),
    "ver": ("2.4", "11.0", "23.1", "5.6.2", "2019", "7.0"),
    "project": ("the migration project", "our customer reporting", "the design review", "a data analysis"),
    "bsod": (
        "DRIVER_POWER_STATE_FAILURE", "MEMORY_MANAGEMENT", "WHEA_UNCORRECTABLE_ERROR",
        "IRQL_NOT_LESS_OR_EQUAL",
    ),
    "key": ("space", "E", "Enter", "shift", "backspace", "A", "N"),
    "size": ("49.8 GB", "99 GB", "49.9 GB", "100 GB", "48 GB"),
    "quota": ("50 GB", "100 GB", "50GB"),
    "external_domain": (
        "a customer's domain", "gmail.com", "our partner in Lyon", "a supplier", "outlook.com",
    ),
    "ndr": (
        "550 5.7.1 Unable to relay", "554 5.7.1 Message rejected", "552 Mailbox full",
        "5.4.1 Recipient address rejected",
    ),
    "fake_sender": ("our CEO", "DHL", "Microsoft 365", "the payroll team", "PayPal", "IT support"),
    "shared_mb": ("invoices", "recruiting", "support-emea", "events", "orders"),
    "dl": ("all-berlin", "sales-emea", "project-atlas", "finance-team"),
    "months": ("3", "6", "12", "two"),
    "mb": ("20", "25", "30", "35"),
    "printer_error": ("49.4C02", "E-530", "SC542", "13.B2.D3", "C-4100", "J-07"),
    "zebra": ("ZT410", "GK420d", "ZD621"),
    "ext": ("2241", "3310", "4478", "1029", "5563"),
    "priority": ("P1", "P2", "P3", "HIGH", "LOW"),
}

# --------------------------------------------------------------------------------------------
# Ticket templates, per label: terse one-liners, polite emails, frustrated messages, error codes.
# --------------------------------------------------------------------------------------------

TICKET_TEMPLATES: dict[str, tuple[str, ...]] = {
    "access": (
        "Locked out of my account after too many password attempts. Can you unlock it? Username is {user}.",
        "pw expired, cant log in to {system}",
        "I recently moved to the {team} team and need access to the {share} shared folder. "
        "{manager} has approved it. Thanks!",
        "The MFA prompt never arrives on my phone, I've been stuck at the sign-in page {time}.",
        "Got a new phone and need to move my {mfa_app} to it. The old phone is already wiped.",
        "Error {auth_error} when signing in to {system}. My password is definitely correct.",
        "Please reset my password for {system}, I forgot it while I was on leave.",
        "Access denied when I open the {share} folder. I could open it last week, did my permissions change?",
        "New starter {newuser} joins {team} {future_day} and needs an account and access to {system}.",
        "Why does {system} ask me to verify my identity every five minutes?? This is ridiculous.",
        "account disabled? it says 'your account has been locked, contact your administrator'",
        "Requesting local admin rights on my machine to install developer tools, approved by {manager}.",
        "Single sign-on to {system} loops back to the login page over and over.",
        "My {mfa_app} codes are rejected as invalid. The time on the phone is correct.",
        "Please remove all access for {leaver}, who left the company {day}.",
        "Windows says 'The user name or password is incorrect' when I unlock, even right after a reset.",
        "Need read-only access to the {system} reporting module for the quarterly audit.",
        "URGENT locked out right before a client call, please unlock my account asap",
        "The password reset link from the self-service portal says 'token expired'. Tried three times.",
        "My YubiKey security key is not recognised at sign-in, so I cannot complete MFA.",
        "Could you add me to the {group} group? I need it to approve purchase orders.",
        "Forgot my password again, sorry! User {user}.",
        "{system} says I am not authorised to view this page. Which role do I need to request?",
        "Please extend my contractor account, it expires {future_day} and my contract was renewed.",
    ),
    "hardware": (
        "My {laptop} won't turn on. The power light blinks {n} times, then nothing.",
        "external monitor not detected through the {dock}",
        "The screen of my {laptop} flickers whenever I move the lid. It has been like this {time}. "
        "Could someone take a look?",
        "Battery goes from 100% to 20% in an hour on my {laptop}. Can I get a replacement battery?",
        "The {key} key on my laptop keyboard is stuck and some keys type twice.",
        "Could I get a second monitor for my desk in {office}, {desk}?",
        "The {dock} doesn't charge my laptop anymore, only the USB ports work.",
        "Laptop gets extremely hot and the fan is loud all the time, sounds like a jet engine.",
        "My headset microphone stopped working, people can't hear me on calls. Tried two USB ports.",
        "Dropped my {laptop} and the screen is cracked. What do I do?",
        "mouse dead, new batteries didnt help",
        "Blue screen {bsod} every few hours on my {laptop}, even when it is idle.",
        "Requesting a replacement laptop: my {laptop} is five years old and the hinge is broken.",
        "Webcam shows only a black image on my {laptop}. The privacy shutter is open.",
        "The {monitor} monitor has a line of dead pixels down the middle.",
        "The docking station at {desk} in {office} doesn't work at all, no lights.",
        "The laptop makes a clicking noise and takes ages to boot, I think the disk is failing.",
        "Can I get a USB-C to HDMI adapter? Presenting in the {room} meeting room {future_day}.",
        "My desk phone shows 'No service' and the display is blank.",
        "Ordered a new {laptop} for {newuser}, when will it arrive?",
        "Spilled coffee on my keyboard, now half the keys don't work. Please help!!",
        "The charger for my {laptop} is broken, the cable is frayed near the plug.",
        "My second screen turns black every few seconds when connected to the {dock}.",
        "Trackpad on my {laptop} stopped responding {time}, an external mouse works fine.",
    ),
    "network": (
        "VPN keeps disconnecting every 10 minutes with {vpn}.",
        "Can't connect to {wifi} on the {floor} floor in {office}.",
        "Internet is super slow today, pages take forever to load. Is there an outage?",
        "{vpn} says '{vpn_error}' when I try to connect from {remote_place}.",
        "I can't reach {intranet}, the browser says DNS_PROBE_FINISHED_NXDOMAIN. Other sites are fine.",
        "wifi drops constantly in meeting room {room}",
        "No network on the wired port at {desk}, the cable is plugged in but there is no link light.",
        "Video calls are choppy and laggy from {office}. Latency seems very high {time}.",
        "Can someone unblock {website}? The proxy blocks it and I need it for work.",
        "Windows shows 'No internet, secured' while I'm connected to {wifi}.",
        "The network drive \\\\{fileserver}\\{share} is not reachable over the VPN, it times out.",
        "Working from {remote_place} and the VPN won't connect at all, timeout after 30 seconds.",
        "Ping to {server} shows 40% packet loss {time}.",
        "The link between {office} and HQ seems down, nobody on our floor can reach {intranet}.",
        "Speedtest on {wifi} shows 2 Mbps, normally it's around 300.",
        "Teams calls go through the VPN tunnel and sound terrible. Can split tunnelling be enabled?",
        "ERR_CONNECTION_TIMED_OUT for every internal site since the switch on our floor was replaced.",
        "My laptop gets no IP address, ipconfig shows 169.254.x.x.",
        "The whole {floor} floor lost network connectivity. Is someone working on it?",
        "nslookup for {server} returns the wrong IP address, looks like a stale DNS record.",
        "can't get on the wifi in {office} AGAIN. third time this week",
        "The connection drops whenever I move between meeting rooms, the Wi-Fi doesn't roam properly.",
        "Remote desktop to {server} disconnects after a few seconds with a network error.",
        "Firewall blocks port 5432 to {server}, we need it opened for the reporting job.",
    ),
    "software": (
        "{app} crashes on startup with error {app_error}.",
        "Please install {app} on my laptop, the licence was approved by {manager}.",
        "My {app} licence expired, it says 'unlicensed product' and most features are greyed out.",
        "After last night's {os} update, {app} won't open anymore.",
        "Could you upgrade {app} to the latest version? I need a feature from the new release.",
        "{app} freezes whenever I open a large file, then shows 'Not responding'.",
        "Software Center says the install of {app} failed with {sc_error}.",
        "Excel macros stopped working after the update, it says macros have been blocked.",
        "Please uninstall {app}, I don't use it and it slows down my machine.",
        "my laptop keeps nagging me to restart for updates in the middle of meetings, can it be postponed?",
        "{app} shows a blank white window after I log in.",
        "Adobe Acrobat asks me to sign in every time I open a PDF.",
        "Is there a company licence for {app}? I'd like to use it for {project}.",
        "{os} keeps failing to install {kb} and rolls back every time.",
        "The {app} add-in disappeared from the ribbon after the update.",
        "ugh {app} crashed AGAIN and I lost an hour of work. third time this week",
        "Which version of {app} is approved? Software Center has {ver} but the vendor says it's outdated.",
        "The antivirus quarantined {app} and now it won't start.",
        "{app} has been stuck at 'Configuring update 35%' for an hour.",
        "Need {app} version {ver} for compatibility with a client's files, please.",
        "{app} is extremely slow since the latest version, even opening a small file takes a minute.",
        "Getting 'This app can't run on your PC' when launching {app}.",
        "Could you push {app} to the whole {team} team? We all need it {future_day}.",
        "Java runtime error when starting {app}, something about an unsupported class version.",
    ),
    "email": (
        "Outlook keeps asking for my password every few minutes.",
        "My mailbox is full ({size} of {quota}) and I can't send emails. Can you increase the quota?",
        "Emails to {external_domain} bounce back with '{ndr}'.",
        "Got a suspicious email pretending to be {fake_sender}, asking me to confirm my bank details. "
        "Reporting it as phishing.",
        "Calendar invites from {person} don't show up in my Outlook calendar.",
        "Please create a shared mailbox '{shared_mb}' for the {team} team.",
        "Outlook search doesn't find any emails older than {months} months.",
        "I can't see {person}'s calendar even though they shared it with me.",
        "Emails I send to {person} end up in their junk folder.",
        "out of office wont turn off, people still get my auto reply",
        "Outlook is stuck on 'Updating inbox' and shows Disconnected in the status bar.",
        "Lots of spam in my inbox since yesterday, all from similar looking addresses.",
        "I accidentally deleted a mail folder with important emails, can you recover it?",
        "Please create a distribution list '{dl}' with {n}{n} members, list attached.",
        "My email signature disappeared from Outlook after the update.",
        "Meeting room {room} declines every calendar booking automatically.",
        "Outlook on my phone stopped syncing new mail {time}.",
        "An attachment of {mb} MB can't be sent. Is there a size limit for email?",
        "Someone in {team} clicked a link in a phishing email, what should they do?",
        "Please forward {person}'s email to me while they are on leave.",
        "Not receiving any emails {time}, the inbox is just empty. Sending works.",
        "Shared calendar for {team} shows meetings at the wrong time since the clocks changed.",
        "Outlook crashes when I open an email with a calendar attachment.",
        "Can I get delegate access to {person}'s mailbox and calendar?",
    ),
    "printing": (
        "{printer} on the {floor} floor shows 'paper jam' but there's no paper stuck.",
        "Can't print to {printer}, my documents just sit in the queue.",
        "Please add the printer {printer_name} in {office} to my laptop.",
        "Toner is low on {printer} near meeting room {room}, can someone replace it?",
        "Printouts come out with grey streaks and are faded on one side.",
        "Scan to folder doesn't work on the {printer}, the scans never arrive.",
        "printer offline again. {floor} floor. please fix",
        "Secure print release: the printer doesn't recognise my badge.",
        "Double-sided printing doesn't work, it always prints single-sided.",
        "My print job comes out as pages of garbage characters and random symbols.",
        "Printer error {printer_error} on {printer_name}.",
        "Colour printing is disabled for me? Everything prints in black and white.",
        "Need a driver for the Zebra {zebra} label printer in the warehouse.",
        "The plotter in {office} cuts off A1 drawings at the edge.",
        "Printing from {app} takes ten minutes per page.",
        "The printer at reception in {office} makes a grinding noise when printing.",
        "Out of A4 paper on the {floor} floor and all the spare trays are empty.",
        "The printer {printer_name} doesn't show up in the list when I try to add it.",
        "print spooler keeps stopping on my laptop, nothing prints",
        "My print jobs always go to the wrong printer, it defaults to the one in {office2}.",
        "Can I get the {printer} set up to print envelopes? The manual feed tray ignores them.",
        "The copier on the {floor} floor jams on every second page when copying.",
        "Prints from my Mac come out in the wrong paper size (Letter instead of A4).",
        "Badge printing for visitors at reception stopped working {time}.",
    ),
}

# Ambiguous tickets: they mention two categories and are labelled by the main issue.
AMBIGUOUS_TEMPLATES: dict[str, tuple[str, ...]] = {
    "access": (
        "The VPN rejects my password since I changed it {day}. The new password works everywhere else.",
        "Outlook and {system} both say my account is locked. I think I typed the old password on my phone.",
        "Can't connect to {wifi} with my username and password since the password reset.",
        "My new {laptop} arrived but I can't log into it, it says the account is not allowed on this device.",
        "The printer asks for a PIN for secure print and my badge PIN was reset, where do I set a new one?",
        "{app} says I am not allowed to sign in with my work account, do I need a licence group?",
    ),
    "hardware": (
        "The {dock} keeps dropping the wired network, Wi-Fi works when I undock.",
        "My laptop's Wi-Fi card seems broken: no networks show up at all, even at home.",
        "The {printer} makes a loud clicking noise and the paper tray is physically broken.",
        "Since the {os} update my {laptop} screen goes black and the fan spins loudly.",
        "The fingerprint reader on my {laptop} stopped working so I can't log in with Windows Hello.",
        "Teams calls: the headset crackles and cuts out, it's the same with every app.",
    ),
    "network": (
        "Outlook says Disconnected and Teams can't connect either, I think the network in {office} is down.",
        "The VPN says my password is wrong but I can log into everything else, is the VPN server broken?",
        "The printer on the {floor} floor is unreachable from my laptop, the other printers work. "
        "Is it a network issue?",
        "{app} can't download updates, the proxy returns 407 for it.",
        "Emails are slow to arrive and web pages load slowly, seems the whole connection in {office} is bad.",
        "My laptop only gets internet when the {dock} is unplugged and I use Wi-Fi.",
    ),
    "software": (
        "Outlook crashes whenever I open the calendar, after the latest Office update.",
        "The printer driver install fails with {sc_error} from Software Center.",
        "{vpn} client crashes right after I launch it, before I can even log in.",
        "After the {os} update my {laptop} is extremely slow, fan at full speed.",
        "{app} asks me for my password on every start, and then says the licence cannot be verified.",
        "The Wi-Fi driver update failed to install and Windows keeps retrying it.",
    ),
    "email": (
        "I can't log in to Outlook on the web, it says my mailbox is not licensed.",
        "Emails with attachments are stuck in the Outbox when I'm on the VPN.",
        "Scanned documents from the {printer} never arrive in my inbox.",
        "Outlook crashes when I open a shared mailbox, other mailboxes are fine.",
        "Phishing email asking me to reset my password through a strange link, should I reset it anyway?",
        "Calendar in Outlook shows meetings from {person} twice since my new laptop was set up.",
    ),
    "printing": (
        "Can't print over the VPN from home to the office printer {printer_name}.",
        "Printing from Outlook prints the emails with huge fonts, other apps are fine.",
        "After the {os} update nothing prints on {printer_name}, the driver seems gone.",
        "My badge works for doors but not for the printer's secure print release.",
        "The {printer} has an error and the display says to contact the network administrator.",
        "Printer in {office} is jammed and the paper tray is cracked, is it broken?",
    ),
}

# Terse tickets with little or no hint of their category; users write these all the time and the
# agent finds out the category later. The generic ones occur under every label.
GENERIC_VAGUE: tuple[str, ...] = (
    "Same problem as last week, please call me on ext. {ext}.",
    "It's not working {time}.",
    "Please call me back, urgent.",
    "Follow-up on my previous ticket: still not fixed.",
    "It's slow again and I can't work.",
    "error again, see screenshot",
    "Can someone come to {desk} in {office}? Hard to explain by email.",
    "Help, nothing works {time}!!",
)
VAGUE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "access": (
        "It won't let me in.", "can't get in to {system} {time}", "still can't log in, same as last week",
        "Something is wrong with my account.", "not working, please call me on ext. {ext}",
    ),
    "hardware": (
        "My laptop is really slow today.", "laptop is acting weird {time}", "the screen thing again",
        "Something is broken on my desk, can someone come by {desk}?", "it keeps freezing, please call me",
    ),
    "network": (
        "Everything is really slow today.", "nothing loads {time}", "can't connect, please help",
        "It keeps dropping out, same as last week.", "not working from {remote_place}, please call me",
    ),
    "software": (
        "It keeps freezing since the update.", "the program won't open {time}", "error when I open it",
        "My laptop is slow since the update.", "still broken after the update, please call me",
    ),
    "email": (
        "I'm not getting my messages {time}.", "something is wrong with my inbox", "it won't send",
        "people say they can't reach me", "my messages are stuck, please call me on ext. {ext}",
    ),
    "printing": (
        "It doesn't print.", "the thing on the {floor} floor is broken again", "nothing comes out {time}",
        "my document is stuck, please help", "it's not working again on the {floor} floor",
    ),
}

# Connectors for two-issue tickets: the main issue and a second one from another category.
TWO_ISSUE_CONNECTORS: tuple[str, ...] = (
    "{main} Also, {second}",
    "{main} Not sure if related, but {second}",
    "{second} That's annoying but my real problem is this: {main}",
    "Two things. Main one: {main} Less important: {second}",
    "{main} (And while I'm at it: {second})",
    "{main} PS: {second}",
)

GREETINGS: tuple[str, ...] = (
    "Hi,", "Hello team,", "Hi IT,", "Good morning,", "Hey,", "Dear Service Desk,", "Hi there,",
    "Hello,", "Morning all,", "Dear IT team,", "hi",
)
SIGNOFFS: tuple[str, ...] = (
    "Thanks", "Thanks, {name}", "Regards, {name}", "Cheers", "Thank you in advance!",
    "Best, {name} ({team})", "Sent from my iPhone", "-- {name}, {team}, ext. {ext}", "thx",
    "Kind regards, {name} {surname}", "Many thanks, {name}",
)
EXTRAS: tuple[str, ...] = (
    "This is blocking my work.", "Not urgent.", "I already restarted twice.",
    "It happens on my colleague's machine too.", "I have a deadline at {clock}.",
    "I'm working from home today.",
    "Screenshot attached.", "Can someone call me on ext. {ext}?", "Tried turning it off and on again.",
    "Please help, it's quite urgent.", "No idea what changed.", "It worked fine yesterday.",
)
PREFIXES: tuple[str, ...] = ("URGENT: ", "Re: ", "[{priority}] ", "FW: ", "Question - ", "Help! ")

# --------------------------------------------------------------------------------------------
# Unlabelled corpus templates: agent replies, knowledge-base snippets, status updates.
# --------------------------------------------------------------------------------------------

AGENT_REPLIES: tuple[str, ...] = (
    "Hi {name}, I've unlocked your account. Please sign in again and change your password when prompted.",
    "Hello {name}, thanks for reporting this. I've reset your MFA registration; open {mfa_app} and "
    "scan the new QR code.",
    "Hi {name}, the {printer} on the {floor} floor was serviced and the queue cleared. Please try again.",
    "Thanks for the details. Could you send us a screenshot of the error and the output of ipconfig /all?",
    "Hi {name}, {app} has been pushed to your laptop via Software Center. It should appear within an hour.",
    "We have increased your mailbox quota to 100 GB. Outlook may need a restart to show the new limit.",
    "Hello, a technician will bring a replacement {dock} to {desk} in {office} {future_day}.",
    "Hi {name}, the VPN gateway had a certificate issue that is now fixed. Please reconnect with {vpn}.",
    "Thanks {name}, we've marked that email as phishing and blocked the sender for everyone. "
    "Do not click any links.",
    "I've added you to the {group} group. It can take up to 30 minutes for the access to apply.",
    "Your replacement {laptop} is ready for pickup at the IT desk in {office}. Please bring your old device.",
    "Hi {name}, we could not reproduce the issue. Is it still happening? If we don't hear back we'll close "
    "the ticket {future_day}.",
    "We've restored the deleted folder from backup; it is in your mailbox under 'Recovered Items'.",
    "Hello, the DNS record for {server} was stale and has been corrected. Please run ipconfig /flushdns.",
    "Hi {name}, the {app} licence has been renewed. Please sign out of {app} and back in.",
    "Thanks for your patience. The access point in meeting room {room} was replaced this morning.",
    "Hi {name}, I've escalated this to the {team} application owners, they will contact you directly.",
    "Please restart your laptop while connected to the office network so the new policy can be applied.",
    "Hi, we've installed the driver for {printer_name}. You should now see it under Printers & scanners.",
    "Closing this ticket as resolved. Reply to this email within 5 days to reopen it.",
    "Hi {name}, the {os} update {kb} was paused for your device until the fix is released.",
    "We replaced the toner in {printer_name} and cleaned the fuser, print quality should be back to normal.",
    "Hi {name}, your new starter request for {newuser} is complete: account, mailbox and laptop are ready.",
    "Could you confirm your username and the exact time the lockout happened so we can check the logs?",
)

KB_SNIPPETS: tuple[str, ...] = (
    "To reset your MFA token, open the self-service portal, choose Security info, remove the old device "
    "and add {mfa_app} again.",
    "To reset your password, go to the self-service portal, answer your security questions and choose a "
    "new password of at least 14 characters.",
    "If {vpn} shows '{vpn_error}', check that your laptop clock is correct and that you are not on a "
    "captive portal Wi-Fi.",
    "To add a printer, open Settings, Printers & scanners, Add device, and type the name {printer_name}.",
    "Mailbox full: archive old emails with Online Archive or empty Deleted Items; the standard quota is "
    "{quota}.",
    "How to report phishing: use the Report Message button in Outlook. Never forward it to colleagues.",
    "Docking station not detecting monitors: update the dock firmware from Software Center, then unplug "
    "power for 30 seconds.",
    "To install software, open Software Center, search for {app} and click Install. Licensed products "
    "need manager approval.",
    "Wi-Fi troubleshooting: forget the {wifi} network, reconnect with your network credentials and make "
    "sure the certificate is trusted.",
    "Secure print: send your job to the FollowMe queue and release it at any printer with your badge.",
    "Laptop battery health can be checked with powercfg /batteryreport; replacements are free within "
    "warranty.",
    "Shared mailboxes appear automatically in Outlook after 30 minutes; in Outlook on the web use Open "
    "another mailbox.",
    "When {app} crashes with {app_error}, repair it in Apps & features or reinstall it from Software Center.",
    "Access to shared folders is granted through groups such as {group}; request them in the access portal.",
    "DNS problems: run ipconfig /flushdns, then nslookup the host. If the address is wrong, contact the "
    "network team.",
    "Paper jams: open all doors of the {printer}, remove the paper gently in the direction of the arrows, "
    "then close the doors.",
    "Account lockouts are often caused by an old password saved on a phone. Remove the mail account on "
    "the phone and add it again.",
    "Out-of-office replies are set in Outlook under File, Automatic Replies. Turn them off there.",
    "Windows updates install during maintenance windows. You can postpone a restart for up to 8 hours.",
    "To request a new laptop, use the hardware catalogue in the service portal. Standard model: {laptop}.",
)

STATUS_UPDATES: tuple[str, ...] = (
    "Service update: {vpn} connections from {office} are failing. Engineers are investigating.",
    "Resolved: the email delay affecting the {team} team has been fixed. Queued mail is being delivered.",
    "Planned maintenance: the print server will be unavailable {future_day} from 20:00 to 22:00.",
    "Incident: Wi-Fi outage on the {floor} floor in {office}. Use a wired connection where possible.",
    "Update: {system} sign-in errors ({auth_error}) are resolved. Please clear your browser cache.",
    "Known issue: {app} crashes after the latest update. A fix will be deployed tonight.",
    "Reminder: password expiry notifications will be sent 14 days before your password expires.",
    "Maintenance complete: {fileserver} was patched and restarted, shared drives are available again.",
    "Outage: internet access from {office} is degraded because of a provider issue. ETA for a fix: {clock}.",
    "Phishing alert: emails pretending to be from {fake_sender} are circulating. Delete and report them.",
    "Change notice: new laptops will ship with {os} from next month.",
    "Update: the {printer} fleet firmware rollout is complete in {office}.",
    "Service desk hours change {future_day}: we are available from 8:00 to 18:00.",
    "Resolved: MFA push notifications were delayed for about an hour. No action is needed.",
)

# --------------------------------------------------------------------------------------------
# Drifted batch: a new collaboration suite, chat transcripts and a security-incident wave.
# --------------------------------------------------------------------------------------------

DRIFT_SLOTS: dict[str, tuple[str, ...]] = {
    "nimbus": (
        "Nimbus Drive", "Nimbus Chat", "Nimbus Mail", "Nimbus Huddle", "Nimbus Docs", "Nimbus Sheets",
        "Nimbus Boards", "Nimbus Calendar",
    ),
    "nimbus_issue": (
        "shows 'sync paused' on every file", "won't let me join the huddle",
        "says my workspace tenant is not provisioned", "lost all my pinned channels",
        "keeps asking me to enrol a passkey", "shows an empty sidebar",
        "duplicates every file with '(conflict)' in the name", "says the space was archived",
        "won't load the migrated board", "times out when I share a doc with an external guest",
    ),
    "incident": (
        "QR-code phishing", "an MFA fatigue attack", "a fake Nimbus password-expiry page",
        "a ransomware note",
        "a credential-stuffing wave", "a malicious OAuth consent request", "a spoofed invoice with a macro",
        "an impersonation of the CFO in chat",
    ),
    "ioc": (
        "nimbus-login-verify.com", "hxxps://secure-nimbus[.]help", "invoice_7781.html", "185.220.101.44",
        "support-nimbus-reset.net", "payroll_update.zip", "qr-code.png",
    ),
    "agent": ("Agent Sam", "Agent Lea", "Agent Omar", "Nimbus bot", "Agent Mia", "Tier2 Jonas"),
}

NIMBUS_TICKETS: tuple[str, ...] = (
    "Since the migration to Nimbus Workspace, {nimbus} {nimbus_issue}.",
    "After the cut-over weekend {nimbus} {nimbus_issue}. My whole team is affected.",
    "{nimbus} {nimbus_issue}, is this a known migration issue?",
    "The Nimbus Workspace onboarding wizard fails at step 3 (passkey enrolment) with code NW-{n}{n}{n}.",
    "Where did my old shared folders go? In {nimbus} I only see 'Migrated content (read-only)'.",
    "Nimbus Huddle rooms don't show up in the room finder, we can't book the {room} huddle space.",
    "Please grant me owner rights on the '{team} hub' space in Nimbus Workspace, the migration reset them.",
    "How do I get the Nimbus Workspace tenant switcher back? It disappeared after the migration.",
    "Our {team} channel in Nimbus Chat lost its message history from before the migration.",
    "The Nimbus desktop agent eats 90% CPU and the {nimbus} tile keeps spinning.",
    "Guests from our partner can't open the {nimbus} links we share, they get 'tenant policy blocks access'.",
    "Nimbus Mail rules from the old system weren't migrated; all my filters are gone.",
)

SECURITY_TICKETS: tuple[str, ...] = (
    "SECURITY INCIDENT: {n}{n} users in {team} received {incident} pointing to {ioc}. Several clicked.",
    "I received {n}{n} sign-in approval requests I never started, looks like {incident}. I denied them all.",
    "Possible breach: {incident} reported in {office}, the link goes to {ioc}. Please advise urgently.",
    "SOC alert escalation: {incident} detected on {n} endpoints, IOC {ioc}. Isolating devices now.",
    "I entered my Nimbus credentials on {ioc} before I realised it was fake. What should I do now?",
    "Shared drive files in the {team} space were renamed with a .locked extension and there is a "
    "readme asking for payment.",
    "Incident report: {incident} targeting the {team} team, sender spoofed our domain, indicator {ioc}.",
    "Someone posing as the CFO in Nimbus Chat asked me to buy gift cards urgently. Reporting it.",
)

# Help-chat scripts: each turn is (speaker, alternatives); one alternative is drawn per turn.
_OPENING = (
    "agent",
    (
        "Hi {name}, thanks for contacting the Nimbus migration help chat. How can I help?",
        "Hello {name}, you're chatting with Nimbus Workspace support. What can I do for you?",
    ),
)
_CLOSING = (
    "agent",
    (
        "Thanks {name}, I've noted everything on ticket NW-{n}{n}{n}. Anything else I can help with?",
        "Noted on ticket NW-{n}{n}{n}. Have a nice day!",
        "I'll keep ticket NW-{n}{n}{n} open and follow up with you by email.",
    ),
)
CHAT_SCRIPTS: tuple[tuple[tuple[str, tuple[str, ...]], ...], ...] = (
    (
        _OPENING,
        ("user", ("since the migration {nimbus} {nimbus_issue}",
                  "hi, after the cut-over {nimbus} {nimbus_issue}")),
        ("agent", ("Which device are you on, and is the Nimbus desktop agent installed?",
                   "Could you tell me your device and the version of the Nimbus desktop agent?")),
        ("user", ("the {laptop}, agent version 3.{n}.{n}",
                  "it's the {laptop}, the migration script installed it")),
        ("agent", ("Please open {nimbus}, go to Settings > Account and click 'Re-sync workspace'.",
                   "Known migration issue: I'm re-provisioning your tenant, give it five minutes.")),
        ("user", ("ok thanks, that worked", "no, still the same, the tile keeps spinning",
                  "it now says re-sync failed (NW-{n}{n}{n})")),
        _CLOSING,
    ),
    (
        _OPENING,
        ("user", ("Nimbus keeps asking me to enrol a passkey but my phone is not accepted",
                  "I'm stuck at the passkey step of the Nimbus onboarding wizard")),
        ("agent", ("Which phone do you use, and do you see an error code?",
                   "Are you enrolling from the {laptop} or from your phone?")),
        ("user", ("an older Android, it says NW-{n}{n}{n} device not eligible",
                  "from the laptop, the QR code expires before I can scan it")),
        ("agent", ("I've reset your passkey enrolment, start the wizard again and use the browser option.",
                   "You can use a hardware security key instead; collect one at the IT desk in {office}.")),
        ("user", ("done, I'm in now", "it still fails at step 3", "ok I'll pick up a key {future_day}")),
        _CLOSING,
    ),
    (
        _OPENING,
        ("user", ("I got a message in Nimbus Chat about {incident}, is that real?",
                  "someone sent me a link to {ioc} saying my Nimbus password expires today")),
        ("agent", ("Did you click the link or enter any credentials?",
                   "Please don't click anything. Did you open the link or the attachment?")),
        ("user", ("no, I didn't click it", "I clicked it but closed the page right away",
                  "yes, I typed my password before I noticed the address was {ioc}")),
        ("agent", ("Thanks, I've forwarded it to the security team and blocked {ioc} for everyone.",
                   "I'm revoking your Nimbus sessions now; set a new password and re-enrol your passkey.")),
        ("user", ("ok, thanks for the quick help", "should I tell my team in the {team} space too?")),
        _CLOSING,
    ),
    (
        _OPENING,
        ("user", ("the Nimbus Huddle rooms are missing from the room finder",
                  "I can't book the {room} huddle space in Nimbus Calendar since the migration")),
        ("agent", ("Which office are you in? Some room mailboxes are still being migrated.",
                   "Could you send me the name of the huddle space exactly as it appears in Nimbus?")),
        ("user", ("{office}, {floor} floor", "it shows as '{room} (legacy)' and is greyed out")),
        ("agent", ("The {office} rooms are in tonight's migration batch, they will appear tomorrow.",
                   "I've re-linked the room to your Nimbus Calendar, please refresh the room finder.")),
        ("user", ("ok, I'll book it tomorrow then",
                  "yes it shows up now, thanks", "still greyed out for me")),
        _CLOSING,
    ),
    (
        _OPENING,
        ("user", ("our {team} channel lost all messages from before the migration",
                  "where did the old shared folders go? {nimbus} only shows 'Migrated content (read-only)'")),
        ("agent", ("Migrated content stays read-only for 30 days. Do you need to edit files there?",
                   "The history import runs per space; could you tell me the name of your space?")),
        ("user", ("yes, we edit the budget sheets every day", "it's the '{team} hub' space")),
        ("agent", ("I've requested owner rights for you on the '{team} hub' space, approval takes an hour.",
                   "I've restarted the history import for your space; it can take up to a day.")),
        ("user", ("thanks, I'll check later", "ok, but we have a deadline at {clock}")),
        _CLOSING,
    ),
)

# --------------------------------------------------------------------------------------------
# Generation.
# --------------------------------------------------------------------------------------------

_SLOT_PATTERN = re.compile(r"\{(\w+)\}")


def fill(template: str, rng: random.Random, slots: dict[str, tuple[str, ...]] = SLOTS) -> str:
    """Replace every `{slot}` in `template` (recursively) with a random value of that slot."""

    def pick(match: re.Match[str]) -> str:
        return fill(rng.choice(slots[match.group(1)]), rng, slots)

    return _SLOT_PATTERN.sub(pick, template)


def _typo(text: str, rng: random.Random) -> str:
    """One realistic slip in a random longer word: swapped, dropped or doubled letter."""
    words = text.split(" ")
    candidates = [i for i, word in enumerate(words) if len(word) >= 5 and word.isalpha()]
    if not candidates:
        return text
    i = rng.choice(candidates)
    word = words[i]
    j = rng.randrange(1, len(word) - 2)
    kind = rng.randrange(3)
    if kind == 0:
        word = word[:j] + word[j + 1] + word[j] + word[j + 2 :]
    elif kind == 1:
        word = word[:j] + word[j + 1 :]
    else:
        word = word[:j] + word[j] + word[j:]
    words[i] = word
    return " ".join(words)


def _dress(body: str, rng: random.Random) -> str:
    """Wrap a ticket body in the varied habits of real users: greetings, sign-offs, typos, case."""
    parts = []
    if rng.random() < 0.3:
        parts.append(rng.choice(GREETINGS))
    parts.append(body)
    if rng.random() < 0.3:
        parts.append(rng.choice(EXTRAS))
    if rng.random() < 0.3:
        parts.append(rng.choice(SIGNOFFS))
    text = fill(" ".join(parts), rng)
    if rng.random() < 0.1:
        text = fill(rng.choice(PREFIXES), rng) + text
    if rng.random() < 0.15:
        text = _typo(text, rng)
    if rng.random() < 0.07:
        text = text.lower()
    return text


def _lower_first(text: str) -> str:
    return text[0].lower() + text[1:] if text[:2].isalpha() and not text[:2].isupper() else text


def ticket(label: str, rng: random.Random, ambiguous: bool = False) -> str:
    """One ticket of `label`; an ambiguous one mentions a second category but is mainly about `label`."""
    if not ambiguous:
        if rng.random() < VAGUE_FRACTION:
            return _dress(fill(rng.choice(VAGUE_TEMPLATES[label] + GENERIC_VAGUE), rng), rng)
        return _dress(fill(rng.choice(TICKET_TEMPLATES[label]), rng), rng)
    if rng.random() < 0.4:
        return _dress(fill(rng.choice(AMBIGUOUS_TEMPLATES[label]), rng), rng)
    other = rng.choice([name for name in LABELS if name != label])
    main = fill(rng.choice(TICKET_TEMPLATES[label]), rng)
    second = _lower_first(fill(rng.choice(TICKET_TEMPLATES[other]), rng))
    return _dress(rng.choice(TWO_ISSUE_CONNECTORS).format(main=main, second=second), rng)


def _unique(make: Callable[[], str], count: int, seen: set[str]) -> list[str]:
    """`count` texts from `make` that are not in `seen` (which is updated)."""
    texts: list[str] = []
    attempts = 0
    while len(texts) < count:
        attempts += 1
        if attempts > 50 * count + 1000:
            raise RuntimeError("demo generator ran out of distinct texts; add templates or slot values")
        text = make()
        if text not in seen:
            seen.add(text)
            texts.append(text)
    return texts


def _label_counts(total: int) -> dict[str, int]:
    counts = {label: int(total * LABEL_WEIGHTS[label]) for label in LABELS}
    counts[LABELS[0]] += total - sum(counts.values())
    return counts


def labelled_tickets(rng: random.Random, total: int, seen: set[str]) -> list[tuple[str, str]]:
    """`total` distinct (text, label) rows with the label mix of LABEL_WEIGHTS, in label order."""
    rows: list[tuple[str, str]] = []
    for label, count in _label_counts(total).items():

        def make(label: str = label) -> str:
            return ticket(label, rng, ambiguous=rng.random() < AMBIGUOUS_FRACTION)

        rows.extend((text, label) for text in _unique(make, count, seen))
    return rows


def stratified_split(
    rows: list[tuple[str, str]], rng: random.Random
) -> tuple[list[tuple[str, str]], list[tuple[str, str]], list[tuple[str, str]]]:
    """Split per label into train/validation/test by SPLIT_FRACTIONS, then shuffle each split."""
    train: list[tuple[str, str]] = []
    val: list[tuple[str, str]] = []
    test: list[tuple[str, str]] = []
    for label in LABELS:
        group = [row for row in rows if row[1] == label]
        rng.shuffle(group)
        n_train = round(len(group) * SPLIT_FRACTIONS[0])
        n_val = round(len(group) * SPLIT_FRACTIONS[1])
        train += group[:n_train]
        val += group[n_train : n_train + n_val]
        test += group[n_train + n_val :]
    for split in (train, val, test):
        rng.shuffle(split)
    return train, val, test


def current_batch(rng: random.Random, total: int, seen: set[str]) -> list[str]:
    """New, unlabelled tickets from the training distribution (no drift)."""
    texts = [text for text, _ in labelled_tickets(rng, total, seen)]
    rng.shuffle(texts)
    return texts


def _chat_transcript(rng: random.Random) -> str:
    """A long one-line help-chat transcript about the Nimbus Workspace migration."""
    slots = {**SLOTS, **DRIFT_SLOTS}
    # One product, team, room, ... per conversation, so that the turns agree with each other.
    for key in ("nimbus", "team", "ioc", "room", "office", "laptop"):
        slots[key] = (rng.choice(slots[key]),)
    agent = rng.choice(DRIFT_SLOTS["agent"])
    user = rng.choice(SLOTS["name"])
    minutes = rng.randrange(8 * 60, 17 * 60)
    turns = []
    for speaker, alternatives in rng.choice(CHAT_SCRIPTS):
        minutes += rng.randrange(1, 4)
        who = agent if speaker == "agent" else user
        text = rng.choice(alternatives).replace("{name}", user)
        turns.append(f"[{minutes // 60:02d}:{minutes % 60:02d}] {who}: {fill(text, rng, slots)}")
    return " ".join(turns)


def drifted_batch(rng: random.Random, total: int, seen: set[str]) -> list[str]:
    """A shifted batch: Nimbus Workspace migration tickets, chat transcripts, security incidents."""
    slots = {**SLOTS, **DRIFT_SLOTS}

    def make() -> str:
        kind = rng.random()
        if kind < 0.35:
            return _chat_transcript(rng)
        if kind < 0.7:
            return _dress(fill(rng.choice(NIMBUS_TICKETS), rng, slots), rng)
        return _dress(fill(rng.choice(SECURITY_TICKETS), rng, slots), rng)

    return _unique(make, total, seen)


def corpus_lines(rng: random.Random, total: int, seen: set[str]) -> list[str]:
    """Unlabelled in-domain documents: ticket bodies, agent replies, KB snippets, status updates."""

    def make() -> str:
        kind = rng.random()
        if kind < 0.45:
            return ticket(rng.choice(LABELS), rng, ambiguous=rng.random() < AMBIGUOUS_FRACTION)
        if kind < 0.7:
            return fill(rng.choice(AGENT_REPLIES), rng)
        if kind < 0.88:
            return fill(rng.choice(KB_SNIPPETS), rng)
        return fill(rng.choice(STATUS_UPDATES), rng)

    return _unique(make, total, seen)


# --------------------------------------------------------------------------------------------
# Writing.
# --------------------------------------------------------------------------------------------

CONFIG_YAML = """\
# Steward demo config, written by `steward demo` (steward/demo.py) next to its data/ folder.
# The data are synthetic IT-support tickets in six categories; paths are relative to this file.
# Edit freely and re-run with `steward run --config steward.yaml`; `steward demo` rewrites it.
name: support-tickets
base_model: minilm
task: text-classification
seed: 13
data:
  train: data/train.csv
  validation: data/val.csv
  test: data/test.csv
  text_column: text
  label_column: label
  domain_corpus: data/corpus.txt
validation:
  min_rows: 50
  max_null_fraction: 0.0
  max_duplicate_fraction: 0.1
  text_length: {min: 1, max: 10000}
  allowed_labels: null
  min_examples_per_label: 5      # training rows each label needs
pretraining:
  enabled: true
  objective: auto                # none for a sentence encoder like MiniLM (the corpus feeds self-training)
  max_steps: 40
  max_epochs: 1.0                # passes over corpus + training texts, if that is fewer steps
  batch_size: 16
  max_seq_length: 64
finetuning:
  epochs: 6                      # a ceiling: early stopping keeps the best validation epoch
  batch_size: 16
  max_seq_length: 64
  learning_rate: 5.0e-5
evaluation:
  primary_metric: macro_f1
  min_score: baseline            # the floor: TF-IDF + logistic regression on the same split (or a number)
  min_improvement: 0.0
  require_approval: false
compression:                     # after evaluation: forms served in place of fp32 only if they pass
  enabled: true
  methods: [onnx-int8]           # ONNX Runtime dynamic int8
  distill: null                  # e.g. {layers: 3, epochs: 3}: also a distilled 3-layer student
  max_metric_drop: 0.01          # of the primary metric, against the fp32 model
  min_agreement: 0.98            # share of test predictions equal to the fp32 model's
monitoring:
  drift_share_threshold: 0.3     # drifted when at least this share of the input signals drift
  current: data/current.csv      # checked hourly by `steward serve` (try data/drifted.csv, or `served`)
  sample_size: 2000              # rows drawn (seeded) from each side of a large batch
  reference: test                # what normal looks like: test | validation | train | a file
  cooldown: 1d                   # at most one drift-triggered retrain per champion in this time
  retrain_on_prior_shift: false  # a class-mix change alone does not retrain
serving:                         # `steward serve-model`
  log_predictions: true          # every answered text, label, probabilities and version, in SQL
  log_text: true                 # false: no raw text is stored (then drift cannot be checked from the log)
  log_url: null                  # another database for the prediction log (default: the registry's)
  log_retention: 30d
  window: 24h                    # what `steward monitor --current served` reads
registry:
  url: null
schedule:
  retrain_cron: "0 3 * * 1"
  monitor_cron: "0 * * * *"
"""


def _csv_bytes(header: tuple[str, ...], rows: Iterable[tuple[str, ...]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def _write_if_changed(path: Path, data: bytes) -> None:
    if not path.exists() or path.read_bytes() != data:
        path.write_bytes(data)


def demo_files(seed: int = 7) -> dict[str, bytes]:
    """Every file of the demo, relative path -> content; the same seed gives the same bytes."""
    seen: set[str] = set()
    labelled = labelled_tickets(random.Random(f"{seed}:labelled"), N_LABELLED, seen)
    train, val, test = stratified_split(labelled, random.Random(f"{seed}:split"))
    current = current_batch(random.Random(f"{seed}:current"), N_CURRENT, seen)
    drifted = drifted_batch(random.Random(f"{seed}:drifted"), N_DRIFTED, seen)
    corpus = corpus_lines(random.Random(f"{seed}:corpus"), N_CORPUS, seen)
    return {
        "data/train.csv": _csv_bytes(("text", "label"), train),
        "data/val.csv": _csv_bytes(("text", "label"), val),
        "data/test.csv": _csv_bytes(("text", "label"), test),
        "data/current.csv": _csv_bytes(("text",), ((text,) for text in current)),
        "data/drifted.csv": _csv_bytes(("text",), ((text,) for text in drifted)),
        "data/corpus.txt": ("\n".join(corpus) + "\n").encode("utf-8"),
        "steward.yaml": CONFIG_YAML.encode("utf-8"),
    }


def write_demo(workdir: Path, seed: int = 7) -> Path:
    """Write data/ and steward.yaml into workdir; return the config path. Idempotent: rewrites the same
    bytes for the same seed."""
    workdir = Path(workdir)
    (workdir / "data").mkdir(parents=True, exist_ok=True)
    for relative, content in demo_files(seed).items():
        _write_if_changed(workdir / relative, content)
    return workdir / "steward.yaml"
