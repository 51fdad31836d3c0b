"""A whole rater session in real Chromium: keyboard through consent, qualification, an
attention check and the end page; mouse and a blocked rater's page; the session of issue 14
end to end (link, consent, qualification, work, code, and back to the link), progress in
two phases, too-fast warnings, images at native size, and declining consent."""

from __future__ import annotations

import pytest

from ratings.models import Assignment, Judgment, Rater
from tests.ratings.factories import add_pairs, make_campaign, make_face, make_images

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def current_assignment(page, previous: str | None) -> Assignment:
    page.wait_for_function(
        "prev => { const r = document.getElementById('rater');"
        " return r && r.dataset.assignment && r.dataset.assignment !== prev; }",
        arg=previous or "",
    )
    public_id = page.get_attribute("#rater", "data-assignment")
    return Assignment.objects.select_related("pair").get(public_id=public_id)


def images_loaded(page) -> bool:
    return page.evaluate(
        "() => ['left','right'].every(id => { const i = document.getElementById(id);"
        " return i.complete && i.naturalWidth > 0; })"
    )


def test_keyboard_session_from_consent_to_completion_code(live_server, page):
    campaign = make_campaign(
        consent_text="I agree to take part.", instructions="Judge each pair.",
        qualification_size=2, pass_mark=1.0, attention_rate=1.0, gold_rate=0.0,
        judgments_per_pair=1, min_response_ms=1,
    )
    imgs = make_images(8)
    add_pairs(campaign, 1, kind="gold_same", images=imgs[0:2])
    add_pairs(campaign, 1, kind="gold_different", images=imgs[2:4])
    add_pairs(campaign, 1, kind="attention", images=imgs[4:6])
    add_pairs(campaign, 3, images=imgs)

    page.goto(f"{live_server.url}/rate/{campaign.slug}/?PROLIFIC_PID=KEYS1&STUDY_ID=S&SESSION_ID=X")
    assert "PROLIFIC_PID" not in page.url  # ids stripped from the address bar
    assert page.locator("text=I agree to take part.").is_visible()
    page.keyboard.press("Enter")  # the agree button has focus

    seen_kinds, seen_phases, previous = [], [], None
    for _ in range(6):
        a = current_assignment(page, previous)
        previous = str(a.public_id)
        page.wait_for_function(
            "() => ['left','right'].every(id => document.getElementById(id).complete)"
        )
        assert images_loaded(page)
        seen_kinds.append(a.pair.kind)
        seen_phases.append(a.phase)
        if a.phase == "qualification":
            assert "Qualification" in page.inner_text("#phase-label")
        same = a.pair.expected_same if a.pair.expected_same is not None else True
        page.keyboard.press("f" if same else "j")
        assert page.locator("#confidence").is_visible()
        page.keyboard.press("4" if a.pair.kind != "deid" else "3")

    page.wait_for_url(f"**/rate/{campaign.slug}/done")
    assert page.inner_text("#completion-code") == campaign.completion_code
    assert seen_phases[:2] == ["qualification", "qualification"]
    assert sorted(seen_kinds[:2]) == ["gold_different", "gold_same"]
    assert seen_kinds[2] == "attention" and seen_kinds[3:] == ["deid"] * 3
    rater = Rater.objects.get(external_id="KEYS1")
    assert rater.qualified and not rater.blocked and rater.consented_at
    assert Judgment.objects.filter(rater=rater).count() == 6
    assert Judgment.objects.get(rater=rater, pair__kind="attention").correct is True
    html = page.content()
    assert "KEYS1" not in html and all(str(i.pk) not in html for i in imgs)


def test_mouse_and_blocked_rater_page(live_server, page):
    campaign = make_campaign(attention_rate=1.0, judgments_per_pair=1, min_response_ms=1)
    imgs = make_images(4)
    add_pairs(campaign, 1, kind="attention", images=imgs[:2])
    add_pairs(campaign, 2, images=imgs)
    page.goto(f"{live_server.url}/rate/{campaign.slug}/?workerId=MOUSE1&assignmentId=A&hitId=H")
    a = current_assignment(page, None)
    assert a.pair.kind == "attention"
    page.click("#ans-diff")  # wrong: the two images are identical
    page.click("[data-conf='4']")
    page.wait_for_selector("#blocked")
    assert "Thank you for your time" in page.inner_text("#blocked")
    rater = Rater.objects.get(external_id="MOUSE1")
    assert rater.blocked and rater.blocked_reason == "attention"
    page.goto(f"{live_server.url}/rate/{campaign.slug}/")  # coming back: still the polite page
    assert page.locator("#blocked").is_visible()


def test_small_things_copy_button_key_labels_and_no_key_hints_on_phones(live_server, browser):
    """The completion code copies with one click; the pressed answer's key label stays
    readable; a touch phone shows no keyboard hints."""
    campaign = make_campaign(judgments_per_pair=1, min_response_ms=1, consent_text="")
    imgs = make_images(4)
    add_pairs(campaign, 1, images=imgs)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    page = context.new_page()
    page.goto(f"{live_server.url}/rate/{campaign.slug}/?PROLIFIC_PID=SMALL1&STUDY_ID=S&SESSION_ID=X")
    current_assignment(page, None)
    page.keyboard.press("f")
    colours = page.evaluate(
        "() => { const b = document.getElementById('ans-same'), k = b.querySelector('kbd');"
        " return [getComputedStyle(b).backgroundColor, getComputedStyle(k).color,"
        " getComputedStyle(k).backgroundColor, b.getAttribute('aria-pressed')]; }")
    assert colours[3] == "true"
    assert colours[1] != colours[2]  # the key label's text is not the colour of its box
    page.keyboard.press("4")
    page.wait_for_url(f"**/rate/{campaign.slug}/done")
    page.click("#copy-code")
    page.wait_for_function("() => document.getElementById('copy-status').textContent !== ''")
    assert page.evaluate("() => navigator.clipboard.readText()") == campaign.completion_code
    context.close()

    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True,
                                has_touch=True, device_scale_factor=3)
    p2 = phone.new_page()
    add_pairs(campaign, 1, images=imgs)
    p2.goto(f"{live_server.url}/rate/{campaign.slug}/?PROLIFIC_PID=PHONE1&STUDY_ID=S&SESSION_ID=X")
    current_assignment(p2, None)
    assert not p2.locator(".key-hints").is_visible()
    assert not p2.locator("#ans-same kbd").is_visible()
    assert p2.locator("#ans-same").is_visible()
    phone.close()


def answer_current(page, previous: str | None, key_conf: str = "3") -> Assignment:
    """Answer the pair on screen correctly, by keyboard; returns its assignment."""
    a = current_assignment(page, previous)
    page.wait_for_function(
        "() => ['left','right'].every(id => document.getElementById(id).complete)")
    same = a.pair.expected_same if a.pair.expected_same is not None else True
    page.keyboard.press("f" if same else "j")
    page.keyboard.press(key_conf)
    return a


def bar(page) -> tuple[str, str, str, float]:
    """The progress bar: phase, aria now/max, and how full it is drawn (0..1)."""
    return page.evaluate(
        "() => { const b = document.getElementById('progress');"
        " return [b.dataset.phase, b.getAttribute('aria-valuenow'), b.getAttribute('aria-valuemax'),"
        " b.firstElementChild.getBoundingClientRect().width / b.getBoundingClientRect().width]; }")


def test_end_to_end_link_consent_qualification_work_code_and_back_to_the_link(live_server, page):
    """Issue 14's whole session: the rule is stated before the start; qualification and work
    are two phases with their own counts (no full bar before the end of the work); the code
    comes once the minimum of real pairs is judged; the link then gives the same code."""
    campaign = make_campaign(
        consent_text="I agree to take part.", instructions="Judge each pair.",
        qualification_size=2, pass_mark=1.0, judgments_per_pair=1, min_work_pairs=2,
        min_response_ms=1,
    )
    imgs = make_images(8)
    add_pairs(campaign, 1, kind="gold_same", images=imgs[0:2])
    add_pairs(campaign, 1, kind="gold_different", images=imgs[2:4])
    add_pairs(campaign, 4, images=imgs[4:])
    link = f"{live_server.url}/rate/{campaign.slug}/?PROLIFIC_PID=E2E1&STUDY_ID=S&SESSION_ID=X"

    page.goto(link)
    assert page.inner_text("#rule-min") == "2"
    assert "first 2 pairs" in page.inner_text("#rules")
    assert page.locator("#decline").is_visible()
    page.click("#agree")

    previous = None
    for i in range(2):
        current_assignment(page, previous)
        assert page.inner_text("#phase-label") == f"Qualification {i} of 2"
        assert "at least 2 pairs" in page.inner_text("#code-rule")
        assert bar(page)[:3] == ["qualification", str(i), "2"]
        previous = str(answer_current(page, previous).public_id)

    for i in range(2):
        a = current_assignment(page, previous)
        assert a.phase == "work" and a.pair.kind == "deid"
        assert page.inner_text("#phase-label") == f"Pairs judged {i} of 4"
        phase, now, top, full = bar(page)
        assert (phase, now, top) == ("work", str(i), "4") and full < 1  # more pairs to come
        assert f"({2 - i} to go)" in page.inner_text("#code-rule")
        assert not page.locator("#finish").is_visible()
        previous = str(answer_current(page, previous).public_id)

    current_assignment(page, previous)  # a third real pair is on screen: the code is earned
    page.wait_for_function(
        "() => document.getElementById('phase-label').textContent === 'Pairs judged 2 of 4'")
    assert "earned" in page.inner_text("#code-rule")
    page.click("#finish")
    page.wait_for_url(f"**/rate/{campaign.slug}/done")
    code = page.inner_text("#completion-code")
    assert code == campaign.completion_code
    rater = Rater.objects.get(external_id="E2E1")
    assert rater.finished_at is not None and rater.qualified and rater.work_count == 2
    assert not Assignment.objects.filter(rater=rater, state="issued").exists()  # handed back

    page.goto(link)  # back to the study link: the same code, no more pairs
    assert page.inner_text("#completion-code") == code
    assert page.locator("#rater").count() == 0
    page.goto(f"{live_server.url}/rate/{campaign.slug}/")
    assert page.inner_text("#completion-code") == code
    assert Judgment.objects.filter(rater=rater).count() == 4


def test_too_fast_answer_gets_a_gentle_warning(live_server, page):
    campaign = make_campaign(judgments_per_pair=1, min_response_ms=60_000, min_work_pairs=1)
    add_pairs(campaign, 3, images=make_images(4))
    page.goto(f"{live_server.url}/rate/{campaign.slug}/?PROLIFIC_PID=FAST1&STUDY_ID=S&SESSION_ID=X")
    first = answer_current(page, None)
    page.wait_for_function("() => document.getElementById('pace-warning').textContent !== ''")
    assert "very quick" in page.inner_text("#pace-warning")
    assert page.locator("#pace-warning").is_visible()
    assert Judgment.objects.get(assignment=first).too_fast
    assert Rater.objects.get(external_id="FAST1").too_fast_count == 1


@pytest.mark.parametrize("shown,size", [("photo", (160, 120)), ("chip", (48, 48)),
                                        ("context", (300, 300))])
def test_images_are_shown_at_native_size_never_enlarged(live_server, page, shown, size):
    """150 px chips were drawn at ~540 px (blurry). Now each image is drawn at its natural
    size, at most scaled down, and the campaign chooses which image raters see."""
    campaign = make_campaign(judgments_per_pair=1, min_response_ms=1, rater_image=shown)
    add_pairs(campaign, 1, images=[make_face(1), make_face(2)])
    page.goto(f"{live_server.url}/rate/{campaign.slug}/?PROLIFIC_PID=IMG{shown}&STUDY_ID=S&SESSION_ID=X")
    current_assignment(page, None)
    page.wait_for_function("() => ['left','right'].every(id => {"
                           " const i = document.getElementById(id); return i.complete && i.naturalWidth; })")
    dims = page.evaluate(
        "() => ['left','right'].map(id => { const i = document.getElementById(id);"
        " const r = i.getBoundingClientRect();"
        " return [i.naturalWidth, i.naturalHeight, r.width, r.height]; })")
    for nat_w, nat_h, shown_w, shown_h in dims:
        assert (nat_w, nat_h) == size
        assert (shown_w, shown_h) == size  # a wide window: exactly native, not enlarged
    page.set_viewport_size({"width": 200, "height": 700})  # a narrow phone: scaled down only
    dims = page.evaluate(
        "() => ['left','right'].map(id => document.getElementById(id).getBoundingClientRect().width)")
    assert all(w <= size[0] for w in dims)
    if size[0] > 100:  # wider than half the narrow window: drawn smaller, never cut off
        assert all(w < size[0] for w in dims)


def test_declining_consent_leads_to_the_screenout_code_and_return_url(live_server, page):
    return_url = f"{live_server.url}/?returned=1"
    campaign = make_campaign(consent_text="I agree to take part.", screenout_code="SCRN42",
                             return_url=return_url)
    add_pairs(campaign, 2, images=make_images(4))
    page.goto(f"{live_server.url}/rate/{campaign.slug}/?PROLIFIC_PID=DECL1&STUDY_ID=S&SESSION_ID=X")
    page.click("#decline")
    page.wait_for_selector("#declined")
    assert page.inner_text("#screenout-code") == "SCRN42"
    assert page.get_attribute("#return-link", "href") == return_url
    assert Rater.objects.get(external_id="DECL1").declined_at is not None
    page.wait_for_url("**/?returned=1", timeout=15_000)  # sent back to the platform
    page.goto(f"{live_server.url}/rate/{campaign.slug}/")  # the link again: still screened out
    assert page.locator("#declined").is_visible()
    assert not Assignment.objects.filter(rater__external_id="DECL1").exists()
