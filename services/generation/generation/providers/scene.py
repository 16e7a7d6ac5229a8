"""Procedural scenes drawn from a prompt, offline and deterministic.

The prompt's words choose the scene: the time of day (sky, sun, moon, stars), the terrain
(mountains, water with reflections, a city skyline, a forest, dunes, fields), subjects (a
lighthouse, clouds, a focal object standing for the words the renderer does not know), the
palette (colour words, moods) and a style (watercolor, pixel art, sketch, neon, vintage, noir).
A prompt without scene words becomes an abstract composition shaped by the words' hash.
Everything random comes from one generator seeded by (prompt, negative prompt, seed, index,
size): the same request renders byte-identical pictures, different prompts clearly differ.
"""

from __future__ import annotations

import colorsys
import hashlib
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, ImageChops, ImageDraw, ImageEnhance, ImageFilter, ImageOps

Check = Callable[[], None]
RGB = tuple[int, int, int]

HUES = {
    "red": 0.0,
    "crimson": 0.97,
    "fire": 0.03,
    "lava": 0.02,
    "orange": 0.08,
    "autumn": 0.09,
    "amber": 0.1,
    "gold": 0.12,
    "golden": 0.12,
    "yellow": 0.15,
    "lime": 0.22,
    "green": 0.33,
    "emerald": 0.4,
    "teal": 0.47,
    "cyan": 0.5,
    "turquoise": 0.48,
    "aqua": 0.5,
    "blue": 0.62,
    "azure": 0.58,
    "navy": 0.64,
    "indigo": 0.7,
    "purple": 0.78,
    "violet": 0.8,
    "lavender": 0.75,
    "magenta": 0.85,
    "pink": 0.92,
    "rose": 0.95,
}

ELEMENTS: dict[str, set[str]] = {
    "mountains": {"mountain", "mountains", "alps", "peak", "peaks", "hills", "hill", "valley", "volcano", "canyon"},
    "water": {"ocean", "sea", "lake", "river", "beach", "water", "waves", "wave", "coast", "harbor", "bay", "shore"},
    "city": {"city", "skyline", "town", "street", "building", "buildings", "cyberpunk", "metropolis", "skyscrapers"},
    "forest": {"forest", "tree", "trees", "jungle", "woods", "pine", "pines", "grove", "park"},
    "desert": {"desert", "dunes", "dune", "sand", "sahara"},
    "field": {"field", "meadow", "grass", "farm", "prairie", "garden", "flowers"},
    "clouds": {"cloud", "clouds", "cloudy", "storm", "fog", "mist", "sky"},
    "snow": {"snow", "snowy", "winter", "ice", "frozen", "arctic", "glacier"},
    "lighthouse": {"lighthouse"},
    "cliff": {"cliff", "cliffs"},
    "space": {"space", "galaxy", "nebula", "planet", "cosmos", "universe", "astronaut"},
    "sun": {"sun", "sunny", "sunshine"},
    "moon": {"moon", "moonlit", "moonlight"},
}
NIGHT = {"night", "midnight", "starry", "stars", "moon", "moonlit", "nocturnal", "space", "galaxy", "nebula"}
SUNSET = {"sunset", "sunrise", "dusk", "dawn", "twilight", "evening"}
STYLES: dict[str, set[str]] = {
    "watercolor": {"watercolor", "watercolour", "painting", "painted", "oil", "impressionist", "gouache", "pastel"},
    "pixel": {"pixel", "pixelated", "8-bit", "8bit", "16-bit", "pixelart"},
    "sketch": {"sketch", "pencil", "drawing", "ink", "charcoal", "lineart"},
    "neon": {"neon", "cyberpunk", "synthwave", "vaporwave", "glowing"},
    "vintage": {"vintage", "sepia", "antique", "faded", "retro"},
    "noir": {"noir", "monochrome", "grayscale", "greyscale", "black-and-white"},
}
STOPWORDS = {
    "a",
    "an",
    "the",
    "of",
    "in",
    "on",
    "at",
    "and",
    "or",
    "with",
    "by",
    "for",
    "to",
    "from",
    "over",
    "under",
    "into",
    "its",
    "his",
    "her",
    "their",
    "very",
    "some",
    "style",
    "photo",
    "image",
    "picture",
    "art",
    "scene",
    "view",
    "highly",
    "detailed",
    "beautiful",
    "high",
    "quality",
    "4k",
    "8k",
    "hd",
    "realistic",
    "photorealistic",
}
KNOWN = set(HUES) | NIGHT | SUNSET | set().union(*ELEMENTS.values(), *STYLES.values())


def words(text: str | None) -> list[str]:
    return re.findall(r"[a-z0-9][a-z0-9\-]*", (text or "").lower())


def hsv(h: float, s: float, v: float) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0), 1), min(max(v, 0), 1))
    return int(r * 255), int(g * 255), int(b * 255)


def mix(a: RGB, b: RGB, t: float) -> RGB:
    return (int(a[0] + (b[0] - a[0]) * t), int(a[1] + (b[1] - a[1]) * t), int(a[2] + (b[2] - a[2]) * t))


def stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


@dataclass(frozen=True)
class Scene:
    """What the prompt asks for, before any randomness."""

    time: str  # day | sunset | night
    elements: frozenset[str]
    style: str | None
    hues: tuple[float, ...]
    saturation: float
    brightness: float
    # Words the renderer has no drawing for: they shape a focal object (or the abstract piece).
    unknown: tuple[str, ...]

    @property
    def abstract(self) -> bool:
        landscape = {"mountains", "water", "city", "forest", "desert", "field", "lighthouse", "cliff", "space"}
        return not (self.elements & landscape)


def parse(prompt: str, negative_prompt: str | None = None) -> Scene:
    ws = words(prompt)
    banned = set(words(negative_prompt))
    wset = set(ws) - banned
    elements = {name for name, keys in ELEMENTS.items() if wset & keys}
    if "lighthouse" in elements:
        elements |= {"water", "cliff"}
    if wset & NIGHT:
        time = "night"
    elif wset & SUNSET:
        time = "sunset"
    else:
        time = "day"
    style = next((name for name, keys in STYLES.items() if wset & keys), None)
    if "black" in wset and "white" in wset:
        style = style or "noir"
    hues = tuple(HUES[w] for w in ws if w in HUES and w not in banned)
    saturation, brightness = 1.0, 1.0
    if wset & {"pastel", "soft", "pale", "muted"}:
        saturation, brightness = 0.55, 1.1
    if wset & {"vibrant", "vivid", "colorful", "colourful", "saturated"}:
        saturation = 1.35
    if wset & {"dark", "gloomy", "moody", "shadowy"}:
        brightness = 0.7
    unknown = tuple(w for w in ws if w not in KNOWN and w not in STOPWORDS and len(w) > 2 and w not in banned)
    return Scene(
        time,
        frozenset(elements - {n for n, k in ELEMENTS.items() if banned & k}),
        style,
        hues,
        saturation,
        brightness,
        unknown,
    )


class Painter:
    """Draws one scene; ``check`` is called between steps so a cancel stops it quickly."""

    def __init__(self, scene: Scene, rng: random.Random, width: int, height: int, check: Check) -> None:
        self.s = scene
        self.rng = rng
        self.w, self.h = width, height
        self.check = check
        # Main hue: the first colour word, else one from the words' hash (so prompts differ).
        base = scene.hues[0] if scene.hues else (stable_hash(" ".join(scene.unknown) or "genimage") % 1000) / 1000
        self.hue = base
        self.accents = [h for h in scene.hues] or [base, (base + 0.5) % 1.0, (base + 0.12) % 1.0]
        self.horizon = int(height * rng.uniform(0.55, 0.68))
        # Colour words tint the sky only when they are sky colours; otherwise the land and objects.
        self.sky_hue = next((h for h in scene.hues if 0.45 <= h <= 0.85), 0.6)
        self.warm_hue = next((h for h in scene.hues if h >= 0.9 or h <= 0.15), 0.05)

    def color(self, h: float, s: float, v: float) -> RGB:
        return hsv(h, s * self.s.saturation, v * self.s.brightness)

    # --- sky --------------------------------------------------------------------------------

    def sky(self) -> Image.Image:
        h = self.sky_hue
        if self.s.time == "night":
            stops = [self.color(h + 0.05, 0.75, 0.07), self.color(h, 0.7, 0.18), self.color(h - 0.03, 0.5, 0.32)]
        elif self.s.time == "sunset":
            warm = self.warm_hue
            stops = [
                self.color(0.72, 0.55, 0.35),
                self.color(warm - 0.02, 0.75, 0.85),
                self.color(warm + 0.08, 0.7, 1.0),
            ]
        else:
            stops = [self.color(h, 0.65, 0.8), self.color(h - 0.02, 0.4, 0.92), self.color(h - 0.05, 0.15, 1.0)]
        return gradient(self.w, self.h, stops, horizon=self.horizon)

    def stars(self, img: Image.Image) -> None:
        draw = ImageDraw.Draw(img)
        count = self.w * self.h // (700 if "space" in self.s.elements else 1500)
        limit = self.h if "space" in self.s.elements else self.horizon
        for _ in range(count):
            x, y = self.rng.uniform(0, self.w), self.rng.uniform(0, limit)
            b = int(self.rng.uniform(0.35, 1.0) ** 3 * 255)
            r = self.rng.choice((0.6, 0.8, 1.0, 1.0, 1.6))
            draw.ellipse((x - r, y - r, x + r, y + r), fill=(b, b, min(255, b + 20)))
        if "space" in self.s.elements:
            self.nebula(img)

    def nebula(self, img: Image.Image) -> None:
        small = Image.new("RGB", (max(1, self.w // 8), max(1, self.h // 8)))
        draw = ImageDraw.Draw(small)
        for _ in range(14):
            x, y = self.rng.uniform(0, small.width), self.rng.uniform(0, small.height)
            r = self.rng.uniform(0.1, 0.35) * min(small.size)
            draw.ellipse((x - r, y - r, x + r, y * 1.0 + r), fill=self.color(self.rng.choice(self.accents), 0.8, 0.5))
        glow = small.filter(ImageFilter.GaussianBlur(max(1, min(small.size) // 6))).resize(img.size)
        img.paste(ImageChops.screen(img, glow))

    def orb(self, img: Image.Image, *, moon: bool) -> None:
        r = min(self.w, self.h) * (0.07 if moon else self.rng.uniform(0.08, 0.13))
        x = self.w * self.rng.uniform(0.2, 0.8)
        if self.s.time == "sunset" and not moon:
            y = self.horizon - r * self.rng.uniform(0.2, 0.9)
            core = self.color(self.warm_hue + 0.04, 0.55, 1.0)
        else:
            y = self.horizon * self.rng.uniform(0.2, 0.45)
            core = (236, 238, 225) if moon else (255, 250, 225)
        glow = Image.new("RGB", (max(1, self.w // 4), max(1, self.h // 4)))
        ImageDraw.Draw(glow).ellipse(
            ((x - 2.6 * r) / 4, (y - 2.6 * r) / 4, (x + 2.6 * r) / 4, (y + 2.6 * r) / 4),
            fill=mix(core, (0, 0, 0), 0.55),
        )
        glow = glow.filter(ImageFilter.GaussianBlur(max(1, r / 5))).resize(img.size, Image.Resampling.BILINEAR)
        img.paste(ImageChops.screen(img, glow))
        draw = ImageDraw.Draw(img)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=core)
        if moon:
            shade = mix(core, (150, 150, 160), 0.5)
            for _ in range(5):
                cx, cy = x + self.rng.uniform(-0.6, 0.6) * r, y + self.rng.uniform(-0.6, 0.6) * r
                cr = r * self.rng.uniform(0.08, 0.2)
                draw.ellipse((cx - cr, cy - cr, cx + cr, cy + cr), fill=shade)

    def clouds(self, img: Image.Image) -> None:
        scale = 4
        layer = Image.new("RGBA", (max(1, self.w // scale), max(1, self.h // scale)), (0, 0, 0, 0))
        draw = ImageDraw.Draw(layer)
        tint = {"night": (90, 95, 120), "sunset": (255, 190, 170)}.get(self.s.time, (255, 255, 255))
        for _ in range(self.rng.randint(3, 7)):
            cx = self.rng.uniform(0, layer.width)
            cy = self.rng.uniform(0.08, 0.45) * self.horizon / scale
            span = self.rng.uniform(0.12, 0.3) * layer.width
            for _ in range(self.rng.randint(4, 8)):
                px = cx + self.rng.uniform(-span / 2, span / 2)
                py = cy + self.rng.uniform(-span / 10, span / 14)
                r = self.rng.uniform(0.08, 0.2) * span
                draw.ellipse((px - r * 1.6, py - r, px + r * 1.6, py + r), fill=(*tint, self.rng.randint(120, 200)))
        layer = layer.filter(ImageFilter.GaussianBlur(max(1, layer.width // 120))).resize(img.size)
        img.paste(Image.alpha_composite(img.convert("RGBA"), layer).convert("RGB"))

    # --- terrain ----------------------------------------------------------------------------

    def ridge(self, base: float, amplitude: float, roughness: float) -> list[tuple[float, float]]:
        step = max(2, self.w // 256)
        xs = list(range(0, self.w + step, step))
        ys = [0.0] * len(xs)
        amp, cells = amplitude, self.rng.randint(3, 6)
        for _ in range(5):
            points = [self.rng.uniform(-1, 1) for _ in range(cells + 2)]
            for i, x in enumerate(xs):
                t = x / self.w * cells
                k = int(t)
                f = (1 - math.cos((t - k) * math.pi)) / 2
                ys[i] += (points[k] * (1 - f) + points[k + 1] * f) * amp
            amp *= roughness
            cells *= 2
        return [(x, base - y) for x, y in zip(xs, ys, strict=True)]

    def mountains(self, img: Image.Image) -> None:
        draw = ImageDraw.Draw(img)
        layers = self.rng.randint(3, 4)
        far = gradient_color(img, self.horizon - 2)
        near = self.color(self.hue + 0.35 if self.s.hues else 0.62, 0.35, 0.25 if self.s.time != "night" else 0.08)
        for i in range(layers):
            t = (i + 1) / layers
            base = self.horizon - self.h * (0.16 - 0.1 * t)
            amp = self.h * (0.16 - 0.06 * t)
            outline = self.ridge(base, amp, 0.5)
            color = mix(far, near, 0.25 + 0.7 * t)
            if "snow" in self.s.elements and i == 0:
                color = mix(color, (245, 248, 255), 0.7)
            draw.polygon([*outline, (self.w, self.h), (0, self.h)], fill=color)
            self.check()

    def desert(self, img: Image.Image) -> None:
        draw = ImageDraw.Draw(img)
        sand = self.color(0.09, 0.5, 0.85)
        for i in range(4):
            t = i / 3
            base = self.horizon + (self.h - self.horizon) * (0.05 + 0.3 * t)
            phase, freq = self.rng.uniform(0, math.tau), self.rng.uniform(1.2, 3.0)
            pts = [
                (x, base - math.sin(x / self.w * freq * math.tau + phase) * self.h * 0.04)
                for x in range(0, self.w + 8, 8)
            ]
            draw.polygon([*pts, (self.w, self.h), (0, self.h)], fill=mix(sand, (90, 50, 20), 0.15 + 0.35 * t))

    def ground(self, img: Image.Image) -> None:
        draw = ImageDraw.Draw(img)
        if "snow" in self.s.elements:
            top, bottom = (235, 240, 250), (190, 200, 220)
        elif "field" in self.s.elements or "forest" in self.s.elements:
            top, bottom = self.color(0.27, 0.55, 0.55), self.color(0.3, 0.7, 0.3)
        else:
            top, bottom = self.color(0.1, 0.35, 0.45), self.color(0.08, 0.4, 0.25)
        if self.s.time == "night":
            top, bottom = mix(top, (0, 0, 10), 0.7), mix(bottom, (0, 0, 10), 0.75)
        img.paste(gradient(self.w, self.h - self.horizon, [top, bottom]), (0, self.horizon))
        if "field" in self.s.elements:
            for _ in range(self.w // 3):
                x = self.rng.uniform(0, self.w)
                y = self.rng.uniform(self.horizon, self.h)
                length = (y - self.horizon) / (self.h - self.horizon + 1) * self.h * 0.05 + 2
                flower = self.rng.random() < 0.12
                color = self.color(self.rng.choice(self.accents), 0.7, 0.95) if flower else mix(top, (0, 0, 0), 0.3)
                draw.line((x, y, x + self.rng.uniform(-2, 2), y - length), fill=color, width=1 if not flower else 3)

    def water(self, img: Image.Image) -> None:
        top = self.horizon
        height = self.h - top
        above = img.crop((0, max(0, top - height), self.w, top)).resize((self.w, height))
        reflection = ImageOps.flip(above).filter(ImageFilter.GaussianBlur(max(1, self.w // 300)))
        tint = Image.new("RGB", reflection.size, self.color(0.57, 0.7, 0.35 if self.s.time != "night" else 0.1))
        water = Image.blend(reflection, tint, 0.45)
        draw = ImageDraw.Draw(water)
        for _ in range(self.w // 6):
            y = self.rng.uniform(0, height) ** 1.3 / max(height, 1) ** 0.3
            x = self.rng.uniform(0, self.w)
            length = self.rng.uniform(0.01, 0.06) * self.w * (0.3 + y / max(height, 1))
            bright = self.rng.random() < 0.3
            draw.line((x, y, x + length, y), fill=(230, 235, 245) if bright else (20, 30, 50), width=1)
        img.paste(water, (0, top))

    def cliff(self, img: Image.Image, side: float) -> tuple[float, float]:
        """A headland on one side; returns where its top is (for a lighthouse)."""
        draw = ImageDraw.Draw(img)
        top_y = self.horizon - self.h * self.rng.uniform(0.06, 0.12)
        edge = self.w * (0.38 if side < 0.5 else 0.62)
        outer = 0 if side < 0.5 else self.w
        jag = [
            (edge + self.rng.uniform(-0.03, 0.03) * self.w, top_y + (self.h - top_y) * f)
            for f in (0.0, 0.25, 0.5, 0.75, 1.0)
        ]
        color = (48, 44, 42) if self.s.time != "night" else (15, 15, 20)
        draw.polygon([(outer, top_y), *jag, (outer, self.h)], fill=color)
        draw.line([(outer, top_y), (edge, top_y)], fill=mix(color, (120, 140, 90), 0.5), width=max(2, self.h // 150))
        return (outer + edge) / 2, top_y

    def lighthouse(self, img: Image.Image, base: tuple[float, float]) -> None:
        draw = ImageDraw.Draw(img, "RGBA")
        x, y = base
        tower_h = self.h * 0.26
        half_bottom, half_top = self.w * 0.028, self.w * 0.018
        bands = 5
        for i in range(bands):
            y0 = y - tower_h * i / bands
            y1 = y - tower_h * (i + 1) / bands
            b0 = half_bottom + (half_top - half_bottom) * i / bands
            b1 = half_bottom + (half_top - half_bottom) * (i + 1) / bands
            color = (200, 40, 40) if i % 2 == 0 else (245, 245, 240)
            draw.polygon([(x - b0, y0), (x + b0, y0), (x + b1, y1), (x - b1, y1)], fill=color)
        lamp_y = y - tower_h - half_top
        draw.rectangle((x - half_top, lamp_y, x + half_top, y - tower_h), fill=(255, 230, 140))
        draw.polygon(
            [(x - half_top * 1.4, lamp_y), (x + half_top * 1.4, lamp_y), (x, lamp_y - half_top * 1.3)],
            fill=(40, 40, 45),
        )
        if self.s.time != "day":
            direction = -1 if x > self.w / 2 else 1
            far = x + direction * self.w * 0.9
            draw.polygon(
                [(x, lamp_y + half_top / 2), (far, lamp_y - self.h * 0.12), (far, lamp_y + self.h * 0.08)],
                fill=(255, 240, 180, 60),
            )

    def city(self, img: Image.Image) -> None:
        draw = ImageDraw.Draw(img)
        neon = self.s.style == "neon"
        base = self.horizon + self.h * 0.02
        for row in range(2):
            x = -self.rng.uniform(0, self.w * 0.03)
            shade = 0.55 if row == 0 else 1.0
            while x < self.w:
                bw = self.w * self.rng.uniform(0.035, 0.09)
                bh = self.h * self.rng.uniform(0.12, 0.42) * (0.8 if row == 0 else 1.0)
                body = mix(self.color(self.hue, 0.3, 0.3), (10, 10, 18), 0.5 + 0.4 * (row == 1) * shade)
                if self.s.time == "day":
                    body = mix(body, (150, 160, 175), 0.45 * shade)
                top = base - bh
                draw.rectangle((x, top, x + bw, self.h), fill=body)
                if row == 1:
                    lit = 0.5 if self.s.time != "day" else 0.12
                    win = max(2, int(self.w / 260))
                    for wy in range(int(top + win * 2), int(base), win * 3):
                        for wx in range(int(x + win), int(x + bw - win), win * 3):
                            if self.rng.random() < lit:
                                hue = self.rng.choice(self.accents) if neon else 0.12
                                draw.rectangle((wx, wy, wx + win, wy + win), fill=self.color(hue, 0.6, 1.0))
                x += bw + self.w * self.rng.uniform(0, 0.01)
            self.check()
        draw.rectangle((0, base, self.w, self.h), fill=(20, 20, 28))

    def forest(self, img: Image.Image) -> None:
        draw = ImageDraw.Draw(img)
        dark = self.color(0.33 if not self.s.hues else self.hue, 0.6, 0.18 if self.s.time != "night" else 0.06)
        for row in range(3):
            t = row / 2
            y_base = self.horizon + (self.h - self.horizon) * (0.05 + 0.45 * t)
            color = mix(gradient_color(img, self.horizon - 1), dark, 0.45 + 0.55 * t)
            x = self.rng.uniform(-20, 0)
            while x < self.w + 20:
                th = self.h * self.rng.uniform(0.12, 0.22) * (0.6 + 0.6 * t)
                tw = th * self.rng.uniform(0.3, 0.42)
                for tier in range(3):
                    ty = y_base - th * tier / 3.2
                    shrink = 1 - tier * 0.25
                    draw.polygon(
                        [(x - tw / 2 * shrink, ty), (x + tw / 2 * shrink, ty), (x, ty - th * 0.55)], fill=color
                    )
                if "snow" in self.s.elements:
                    draw.polygon(
                        [
                            (x - tw * 0.12, y_base - th * 0.72),
                            (x + tw * 0.12, y_base - th * 0.72),
                            (x, y_base - th * 0.9),
                        ],
                        fill=(240, 245, 255),
                    )
                x += tw * self.rng.uniform(0.5, 0.9)
            self.check()

    # --- subjects and abstract --------------------------------------------------------------

    def focal(self, img: Image.Image) -> None:
        """An object standing for the words the renderer cannot draw: its shape and colour come
        from those words, its place from the seed."""
        key = stable_hash(" ".join(self.s.unknown))
        kind = ("sphere", "crystal", "star", "ring", "monolith")[key % 5]
        hue = (key >> 8) % 1000 / 1000 if not self.s.hues else self.accents[-1]
        color = self.color(hue, 0.75, 0.95)
        x = self.w * self.rng.choice((1 / 3, 2 / 3)) + self.rng.uniform(-0.05, 0.05) * self.w
        y = self.horizon - self.h * self.rng.uniform(0.02, 0.2)
        r = min(self.w, self.h) * (0.06 + (key >> 16) % 100 / 1000)
        layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(layer)
        shadow = (0, 0, 0, 90)
        draw.ellipse((x - r, y + r * 0.9, x + r, y + r * 1.2), fill=shadow)
        if kind == "sphere":
            for i in range(8):
                f = i / 8
                draw.ellipse(
                    (
                        x - r * (1 - f) - f * r * 0.3,
                        y - r * (1 - f) - f * r * 0.3,
                        x + r * (1 - f) - f * r * 0.3,
                        y + r * (1 - f) - f * r * 0.3,
                    ),
                    fill=mix(color, (255, 255, 255), f * 0.6),
                )
        elif kind == "crystal":
            draw.polygon([(x, y - r * 1.6), (x + r * 0.6, y), (x, y + r), (x - r * 0.6, y)], fill=color)
            draw.polygon([(x, y - r * 1.6), (x + r * 0.6, y), (x, y + r)], fill=mix(color, (0, 0, 0), 0.3))
        elif kind == "star":
            points = []
            for i in range(10):
                a = -math.pi / 2 + i * math.pi / 5
                rr = r if i % 2 == 0 else r * 0.45
                points.append((x + rr * math.cos(a), y + rr * math.sin(a)))
            draw.polygon(points, fill=color)
        elif kind == "ring":
            draw.ellipse((x - r, y - r, x + r, y + r), outline=color, width=max(3, int(r / 4)))
        else:
            draw.rectangle((x - r * 0.35, y - r * 1.8, x + r * 0.35, y + r), fill=mix(color, (0, 0, 0), 0.6))
            draw.rectangle((x - r * 0.35, y - r * 1.8, x - r * 0.1, y + r), fill=mix(color, (0, 0, 0), 0.35))
        img.paste(Image.alpha_composite(img.convert("RGBA"), layer).convert("RGB"))

    def abstract(self) -> Image.Image:
        """Flowing bands and orbs; frequencies, phases and colours come from the words and seed."""
        key = stable_hash(" ".join(self.s.unknown) or "abstract")
        hues = list(self.accents) + [(self.hue + 0.08 * i) % 1 for i in range(1, 4)]
        img = gradient(self.w, self.h, [self.color(hues[0], 0.5, 0.95), self.color(hues[1], 0.7, 0.45)])
        draw = ImageDraw.Draw(img, "RGBA")
        bands = 4 + key % 4
        for i in range(bands):
            freq = 1 + (key >> (4 * i)) % 4 + self.rng.random()
            phase = self.rng.uniform(0, math.tau)
            base = self.h * (i + 1) / (bands + 1)
            amp = self.h * self.rng.uniform(0.04, 0.14)
            pts = [(x, base + math.sin(x / self.w * freq * math.tau + phase) * amp) for x in range(0, self.w + 8, 8)]
            color = self.color(hues[i % len(hues)], self.rng.uniform(0.5, 0.9), self.rng.uniform(0.55, 1.0))
            draw.polygon([*pts, (self.w, self.h), (0, self.h)], fill=(*color, 150))
            self.check()
        for _ in range(4 + key % 7):
            x, y = self.rng.uniform(0, self.w), self.rng.uniform(0, self.h)
            r = self.rng.uniform(0.03, 0.16) * min(self.w, self.h)
            color = self.color(self.rng.choice(hues), 0.6, 1.0)
            draw.ellipse((x - r, y - r, x + r, y + r), fill=(*color, self.rng.randint(90, 200)))
        return img

    # --- styles -----------------------------------------------------------------------------

    def styled(self, img: Image.Image) -> Image.Image:
        style = self.s.style
        if style == "watercolor":
            img = img.filter(ImageFilter.GaussianBlur(max(1, min(self.w, self.h) // 250)))
            img = ImageChops.multiply(img, self.paper(235, 255))
        elif style == "pixel":
            block = max(4, min(self.w, self.h) // 96)
            small = img.resize((max(1, self.w // block), max(1, self.h // block)), Image.Resampling.BOX)
            small = small.quantize(colors=24, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).convert("RGB")
            img = small.resize((self.w, self.h), Image.Resampling.NEAREST)
        elif style == "sketch":
            gray = ImageOps.grayscale(img)
            edges = ImageOps.invert(gray.filter(ImageFilter.FIND_EDGES))
            edges = ImageOps.autocontrast(edges, cutoff=2)
            img = ImageChops.multiply(Image.merge("RGB", (edges, edges, edges)), self.paper(225, 250))
        elif style == "neon":
            glow = img.filter(ImageFilter.GaussianBlur(max(2, min(self.w, self.h) // 80)))
            img = ImageEnhance.Color(ImageChops.screen(img, glow)).enhance(1.5)
        elif style == "vintage":
            sepia = ImageOps.colorize(ImageOps.grayscale(img), (40, 25, 10), (250, 235, 200))
            img = Image.blend(img, sepia, 0.75)
            img = ImageChops.multiply(img, self.paper(215, 255))
        elif style == "noir":
            gray = ImageOps.autocontrast(ImageOps.grayscale(img), cutoff=1)
            img = Image.merge("RGB", (gray, gray, gray))
        return self.vignette(img, 0.45 if style in ("vintage", "noir") else 0.25)

    def paper(self, low: int, high: int) -> Image.Image:
        """Deterministic grain (Pillow's own noise generator is not seedable)."""
        gw, gh = max(1, self.w // 2), max(1, self.h // 2)
        raw = Image.frombytes("L", (gw, gh), self.rng.randbytes(gw * gh)).resize((self.w, self.h))
        grain = raw.point(lambda v: low + (high - low) * v // 255)
        return Image.merge("RGB", (grain, grain, grain))

    def vignette(self, img: Image.Image, strength: float) -> Image.Image:
        radial = Image.radial_gradient("L").resize(img.size, Image.Resampling.BILINEAR)
        mask = radial.point(lambda v: 255 - int(min(255, max(0, v - 110)) * strength * 1.6))
        return ImageChops.multiply(img, Image.merge("RGB", (mask, mask, mask)))


def gradient(width: int, height: int, stops: list[RGB], *, horizon: int | None = None) -> Image.Image:
    """A vertical gradient through ``stops`` (the last one reached at ``horizon`` when given)."""
    height = max(1, height)
    span = horizon if horizon else height
    lut: list[list[int]] = [[], [], []]
    for i in range(256):
        t = min(1.0, i / 255 * height / max(span, 1))
        pos = t * (len(stops) - 1)
        k = min(int(pos), len(stops) - 2)
        c = mix(stops[k], stops[k + 1], pos - k)
        for ch in range(3):
            lut[ch].append(c[ch])
    ramp = Image.linear_gradient("L").resize((width, height), Image.Resampling.BILINEAR)
    return Image.merge("RGB", [ramp.point(lut[ch]) for ch in range(3)])


def gradient_color(img: Image.Image, y: int) -> RGB:
    px = img.getpixel((img.width // 2, min(max(0, y), img.height - 1)))
    assert isinstance(px, tuple)
    return px[0], px[1], px[2]


def paint(
    prompt: str,
    negative_prompt: str | None,
    rng: random.Random,
    width: int,
    height: int,
    check: Check = lambda: None,
) -> Image.Image:
    scene = parse(prompt, negative_prompt)
    p = Painter(scene, rng, width, height, check)
    e = scene.elements
    if scene.abstract:
        img = p.abstract()
        check()
        if scene.time == "night" or "stars" in words(prompt):
            p.stars(img)
        if "sun" in e or "moon" in e:
            p.orb(img, moon="moon" in e or scene.time == "night")
        return p.styled(img)
    img = p.sky()
    if scene.time == "night" or "space" in e:
        p.stars(img)
    check()
    if "space" not in e:
        if scene.time == "night" or "moon" in e:
            p.orb(img, moon=True)
        elif scene.time == "sunset" or "sun" in e or rng.random() < 0.4:
            p.orb(img, moon=False)
        if "clouds" in e or rng.random() < 0.5:
            p.clouds(img)
        check()
        if "mountains" in e:
            p.mountains(img)
        if "water" in e:
            p.water(img)
        elif "desert" in e:
            p.desert(img)
        else:
            p.ground(img)
        check()
        if "city" in e:
            p.city(img)
        if "forest" in e:
            p.forest(img)
        if "cliff" in e:
            top = p.cliff(img, rng.random())
            if "lighthouse" in e:
                p.lighthouse(img, top)
    if scene.unknown:
        p.focal(img)
    check()
    return p.styled(img)
